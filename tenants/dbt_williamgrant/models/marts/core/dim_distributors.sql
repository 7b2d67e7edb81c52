with distributors as (

    select * from {{ ref('int_distributors_enriched') }}

),

shipment_summary as (

    select
        distributor_id,
        min(ship_date) as first_ship_date,
        max(ship_date) as last_ship_date,
        count(*) as shipment_count,
        sum(cases) as lifetime_cases_shipped
    from {{ ref('stg_shipments') }}
    group by 1

)

select
    distributors.distributor_id,
    distributors.distributor_name,
    distributors.distributor_status,
    distributors.distributor_status = 'active' as is_active,
    distributors.market_code,
    distributors.market_name,
    distributors.region,
    distributors.currency_code,
    distributors.trade_discount_pct,
    distributors.onboarded_date,
    shipment_summary.first_ship_date,
    shipment_summary.last_ship_date,
    {{ dbt.datediff(
        'shipment_summary.last_ship_date',
        "cast('" ~ var('reporting_end_date') ~ "' as date)",
        'day'
    ) }} as days_since_last_shipment,
    coalesce(shipment_summary.shipment_count, 0) as shipment_count,
    coalesce(shipment_summary.lifetime_cases_shipped, 0) as lifetime_cases_shipped,
    distributors.updated_at as source_updated_at
from distributors
left join shipment_summary
    on distributors.distributor_id = shipment_summary.distributor_id
