{#- Quarterly brand scorecard (weekly refresh): sell-in, sell-out and net revenue. -#}

with shipments as (

    select
        brand_id,
        cast({{ dbt.date_trunc('quarter', 'ship_month') }} as date) as quarter_start,
        sum(nine_litre_cases) as shipped_nine_litre_cases,
        sum(net_revenue_gbp) as net_revenue_gbp
    from {{ ref('fct_net_revenue_gbp') }}
    group by 1, 2

),

depletions as (

    select
        brand_id,
        cast({{ dbt.date_trunc('quarter', 'depletion_month') }} as date) as quarter_start,
        sum(nine_litre_cases) as depleted_nine_litre_cases
    from {{ ref('fct_depletions') }}
    group by 1, 2

),

quarters as (

    select distinct quarter_start, year_quarter_label from {{ ref('dim_months') }}

),

brands as (

    select brand_id, brand_name, portfolio_segment from {{ ref('dim_brands') }}

),

combined as (

    select
        brands.brand_id,
        brands.brand_name,
        brands.portfolio_segment,
        quarters.quarter_start,
        quarters.year_quarter_label,
        coalesce(shipments.shipped_nine_litre_cases, 0) as shipped_nine_litre_cases,
        coalesce(depletions.depleted_nine_litre_cases, 0) as depleted_nine_litre_cases,
        coalesce(shipments.net_revenue_gbp, 0) as net_revenue_gbp
    from brands
    cross join quarters
    left join shipments
        on brands.brand_id = shipments.brand_id
        and quarters.quarter_start = shipments.quarter_start
    left join depletions
        on brands.brand_id = depletions.brand_id
        and quarters.quarter_start = depletions.quarter_start

)

select
    {{ dbt.concat(['brand_id', "'|'", 'year_quarter_label']) }} as brand_quarter_key,
    brand_id,
    brand_name,
    portfolio_segment,
    quarter_start,
    year_quarter_label,
    round(shipped_nine_litre_cases, 2) as shipped_nine_litre_cases,
    round(depleted_nine_litre_cases, 2) as depleted_nine_litre_cases,
    round(net_revenue_gbp, 2) as net_revenue_gbp,
    case
        when shipped_nine_litre_cases > 0
            then round(net_revenue_gbp / shipped_nine_litre_cases, 2)
    end as net_revenue_per_nine_litre_case_gbp,
    round(
        100.0 * net_revenue_gbp / nullif(sum(net_revenue_gbp) over (partition by quarter_start), 0),
        2
    ) as share_of_quarter_net_revenue_pct
from combined
