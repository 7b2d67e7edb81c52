{#-
    Dense distributor x SKU x month grid (from the first month with any
    activity onwards) with cases shipped in and depleted out.
-#}

with months as (

    select month_start from {{ ref('int_months') }}

),

shipped as (

    select
        distributor_id,
        sku,
        ship_month as activity_month,
        sum(cases) as shipped_cases
    from {{ ref('stg_shipments') }}
    group by 1, 2, 3

),

depleted as (

    select
        distributor_id,
        sku,
        depletion_month as activity_month,
        sum(cases) as depleted_cases
    from {{ ref('stg_depletions') }}
    group by 1, 2, 3

),

pairs as (

    select distributor_id, sku, min(activity_month) as first_activity_month
    from (
        select distributor_id, sku, activity_month from shipped
        union all
        select distributor_id, sku, activity_month from depleted
    ) as activity
    group by 1, 2

),

grid as (

    select
        pairs.distributor_id,
        pairs.sku,
        months.month_start
    from pairs
    cross join months
    where months.month_start >= pairs.first_activity_month

)

select
    {{ dbt.concat(['grid.distributor_id', "'|'", 'grid.sku', "'|'", 'cast(grid.month_start as ' ~ dbt.type_string() ~ ')']) }} as distributor_sku_month_key,
    grid.distributor_id,
    grid.sku,
    grid.month_start,
    coalesce(shipped.shipped_cases, 0) as shipped_cases,
    coalesce(depleted.depleted_cases, 0) as depleted_cases
from grid
left join shipped
    on grid.distributor_id = shipped.distributor_id
    and grid.sku = shipped.sku
    and grid.month_start = shipped.activity_month
left join depleted
    on grid.distributor_id = depleted.distributor_id
    and grid.sku = depleted.sku
    and grid.month_start = depleted.activity_month
