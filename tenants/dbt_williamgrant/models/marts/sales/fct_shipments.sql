{{
    config(
        materialized='incremental',
        unique_key='shipment_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns'
    )
}}

{#-
    Sell-in fact. Incremental: each run re-processes the last
    `shipments_lookback_days` days of ship dates (late invoice corrections)
    plus anything loaded since the previous run.
-#}

with shipments as (

    select * from {{ ref('stg_shipments') }}
    {% if is_incremental() %}
    where ship_date >= (
            select cast({{ dbt.dateadd('day', -1 * var('shipments_lookback_days'), 'max(ship_date)') }} as date)
            from {{ this }}
        )
        or _loaded_at > (select max(_loaded_at) from {{ this }})
    {% endif %}

),

products as (

    select * from {{ ref('int_products_enriched') }}

),

distributors as (

    select * from {{ ref('int_distributors_enriched') }}

)

select
    shipments.shipment_id,
    shipments.invoice_number,
    shipments.ship_date,
    shipments.ship_month,
    shipments.distributor_id,
    distributors.market_code,
    distributors.region,
    shipments.sku,
    products.brand_id,
    shipments.cases,
    shipments.cases * products.case_size as bottles,
    shipments.cases * products.nine_litre_factor as nine_litre_cases,
    shipments.cases * products.pure_alcohol_litres_per_case as pure_alcohol_litres,
    shipments._loaded_at,
    {{ dbt.current_timestamp() }} as dbt_updated_at
from shipments
inner join products
    on shipments.sku = products.sku
inner join distributors
    on shipments.distributor_id = distributors.distributor_id
