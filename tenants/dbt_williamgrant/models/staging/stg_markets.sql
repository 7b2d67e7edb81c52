-- depends_on: {{ ref('markets') }}

with source as (

    select * from {{ source('wg_raw', 'markets') }}

)

select
    upper(market_code) as market_code,
    market_name,
    region,
    upper(currency_code) as currency_code,
    _loaded_at
from source
