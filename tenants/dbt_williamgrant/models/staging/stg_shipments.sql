-- depends_on: {{ ref('shipments') }}

with source as (

    select * from {{ source('wg_raw', 'shipments') }}

)

select
    shipment_id,
    invoice_number,
    sku,
    distributor_id,
    ship_date,
    cast({{ dbt.date_trunc('month', 'ship_date') }} as date) as ship_month,
    cases,
    _loaded_at
from source
