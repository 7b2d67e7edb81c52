{{ config(materialized='ephemeral') }}

{#- Turns point-in-time price list entries into [valid_from, valid_to) periods. -#}

select
    price_list_key,
    sku,
    market_code,
    currency_code,
    list_price_per_case,
    valid_from,
    lead(valid_from) over (
        partition by sku, market_code
        order by valid_from
    ) as valid_to
from {{ ref('stg_price_lists') }}
