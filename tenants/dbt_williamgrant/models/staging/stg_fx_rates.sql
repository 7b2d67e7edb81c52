-- depends_on: {{ ref('fx_rates') }}

with source as (

    select * from {{ source('wg_raw', 'fx_rates') }}

)

select
    {{ dbt.concat(['upper(currency_code)', "'|'", 'cast(rate_month as ' ~ dbt.type_string() ~ ')']) }} as fx_rate_key,
    upper(currency_code) as currency_code,
    cast({{ dbt.date_trunc('month', 'rate_month') }} as date) as rate_month,
    gbp_per_unit,
    rate_source,
    _loaded_at
from source
