{#- Finance control: for every SKU x market that shipped, how much volume was priced. -#}

with priced as (

    select * from {{ ref('int_shipments_priced') }}

),

current_prices as (

    select sku, market_code, currency_code, list_price_per_case, valid_from
    from {{ ref('int_price_list_periods') }}
    where valid_to is null

)

select
    {{ dbt.concat(['priced.sku', "'|'", 'priced.market_code']) }} as sku_market_key,
    priced.sku,
    priced.market_code,
    count(*) as shipment_count,
    sum(priced.cases) as shipped_cases,
    sum(case when priced.has_list_price then 0 else 1 end) as unpriced_shipment_count,
    sum(case when priced.has_list_price then 0 else priced.cases end) as unpriced_cases,
    max(current_prices.valid_from) as current_price_valid_from,
    max(current_prices.list_price_per_case) as current_list_price_per_case,
    max(current_prices.currency_code) as price_currency_code,
    min(current_prices.sku) is not null as has_current_price
from priced
left join current_prices
    on priced.sku = current_prices.sku
    and priced.market_code = current_prices.market_code
group by 1, 2, 3
