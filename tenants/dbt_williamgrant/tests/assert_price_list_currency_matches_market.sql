-- Every price list entry must be quoted in its market's trading currency.

select
    price_lists.price_list_key,
    price_lists.market_code,
    price_lists.currency_code as price_currency,
    markets.currency_code as market_currency
from {{ ref('stg_price_lists') }} as price_lists
inner join {{ ref('stg_markets') }} as markets
    on price_lists.market_code = markets.market_code
where price_lists.currency_code <> markets.currency_code
