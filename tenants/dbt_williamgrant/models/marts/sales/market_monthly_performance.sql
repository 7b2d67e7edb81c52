with months as (

    select month_start from {{ ref('dim_months') }}

),

markets as (

    select market_code, market_name, region from {{ ref('dim_markets') }}

),

shipped as (

    select
        market_code,
        ship_month as month_start,
        sum(cases) as shipped_cases,
        sum(nine_litre_cases) as shipped_nine_litre_cases
    from {{ ref('fct_shipments') }}
    group by 1, 2

),

revenue as (

    select
        market_code,
        ship_month as month_start,
        sum(net_revenue_gbp) as net_revenue_gbp,
        sum(case when has_list_price then 0 else cases end) as unpriced_cases
    from {{ ref('fct_net_revenue_gbp') }}
    group by 1, 2

),

depleted as (

    select
        market_code,
        depletion_month as month_start,
        sum(cases) as depleted_cases,
        sum(nine_litre_cases) as depleted_nine_litre_cases,
        count(distinct distributor_id) as reporting_distributors
    from {{ ref('fct_depletions') }}
    group by 1, 2

),

combined as (

    select
        markets.market_code,
        markets.market_name,
        markets.region,
        months.month_start,
        coalesce(shipped.shipped_cases, 0) as shipped_cases,
        coalesce(shipped.shipped_nine_litre_cases, 0) as shipped_nine_litre_cases,
        coalesce(depleted.depleted_cases, 0) as depleted_cases,
        coalesce(depleted.depleted_nine_litre_cases, 0) as depleted_nine_litre_cases,
        coalesce(depleted.reporting_distributors, 0) as reporting_distributors,
        round(coalesce(revenue.net_revenue_gbp, 0), 2) as net_revenue_gbp,
        coalesce(revenue.unpriced_cases, 0) as unpriced_cases
    from markets
    cross join months
    left join shipped
        on markets.market_code = shipped.market_code
        and months.month_start = shipped.month_start
    left join depleted
        on markets.market_code = depleted.market_code
        and months.month_start = depleted.month_start
    left join revenue
        on markets.market_code = revenue.market_code
        and months.month_start = revenue.month_start

)

select
    {{ dbt.concat(['market_code', "'|'", 'cast(month_start as ' ~ dbt.type_string() ~ ')']) }} as market_month_key,
    *,
    shipped_nine_litre_cases - depleted_nine_litre_cases as net_stock_build_nine_litre_cases,
    sum(net_revenue_gbp) over (
        partition by market_code, {{ dbt.date_trunc('year', 'month_start') }}
        order by month_start
        rows between unbounded preceding and current row
    ) as ytd_net_revenue_gbp,
    lag(net_revenue_gbp) over (partition by market_code order by month_start) as prior_month_net_revenue_gbp
from combined
