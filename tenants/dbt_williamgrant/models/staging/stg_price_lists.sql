-- depends_on: {{ ref('price_lists') }}

with source as (

    select * from {{ source('wg_raw', 'price_lists') }}

)

select
    {{ dbt.hash(dbt.concat([
        'sku', "'|'", 'upper(market_code)', "'|'", 'cast(valid_from as ' ~ dbt.type_string() ~ ')'
    ])) }} as price_list_key,
    sku,
    upper(market_code) as market_code,
    valid_from,
    list_price_per_case,
    upper(currency_code) as currency_code,
    _loaded_at
from source
