-- Shipments and depletions are physical case counts and can never be negative.
-- Returns offending rows; the test passes when none come back.

select
    'shipment' as record_type,
    shipment_id as record_id,
    cast(cases as {{ dbt.type_numeric() }}) as cases
from {{ ref('stg_shipments') }}
where cases <= 0

union all

select
    'depletion' as record_type,
    depletion_id as record_id,
    cast(cases as {{ dbt.type_numeric() }}) as cases
from {{ ref('stg_depletions') }}
where cases < 0
