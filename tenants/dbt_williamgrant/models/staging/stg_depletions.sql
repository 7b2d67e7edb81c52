-- depends_on: {{ ref('depletions') }}

with source as (

    select * from {{ source('wg_raw', 'depletions') }}

)

select
    depletion_id,
    distributor_id,
    sku,
    cast({{ dbt.date_trunc('month', 'depletion_month') }} as date) as depletion_month,
    -- distributors report cases as free text; unparseable values become null
    {{ dbt.safe_cast('trim(cases_reported)', 'numeric(12,2)') }} as cases,
    lower(channel) as channel,
    _loaded_at
from source
