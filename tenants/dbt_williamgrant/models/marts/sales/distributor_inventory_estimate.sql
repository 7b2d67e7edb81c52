{#-
    Estimated distributor stock per SKU and month: cumulative sell-in minus
    cumulative sell-out since the first month of activity in the window.
    Months of cover uses the trailing three-month average depletion.
-#}

with monthly as (

    select * from {{ ref('int_distributor_sku_monthly') }}

),

running as (

    select
        distributor_sku_month_key,
        distributor_id,
        sku,
        month_start,
        shipped_cases,
        depleted_cases,
        sum(shipped_cases - depleted_cases) over (
            partition by distributor_id, sku
            order by month_start
            rows between unbounded preceding and current row
        ) as closing_inventory_cases,
        avg(depleted_cases) over (
            partition by distributor_id, sku
            order by month_start
            rows between 2 preceding and current row
        ) as avg_depletion_3m
    from monthly

)

select
    running.distributor_sku_month_key,
    running.distributor_id,
    distributors.market_code,
    running.sku,
    running.month_start,
    running.shipped_cases,
    running.depleted_cases,
    running.closing_inventory_cases,
    round(running.avg_depletion_3m, 2) as avg_depletion_3m,
    case
        when running.avg_depletion_3m > 0
            then round(running.closing_inventory_cases / running.avg_depletion_3m, 2)
    end as months_of_cover,
    case
        when running.closing_inventory_cases < 0 then 'negative_estimate'
        when running.avg_depletion_3m = 0 then 'no_depletions'
        when running.closing_inventory_cases / running.avg_depletion_3m < 0.5 then 'stock_out_risk'
        when running.closing_inventory_cases / running.avg_depletion_3m > 3 then 'overstocked'
        else 'healthy'
    end as inventory_status
from running
inner join {{ ref('int_distributors_enriched') }} as distributors
    on running.distributor_id = distributors.distributor_id
