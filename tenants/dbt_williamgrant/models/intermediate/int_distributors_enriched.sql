with distributors as (

    select * from {{ ref('stg_distributors') }}

),

markets as (

    select * from {{ ref('stg_markets') }}

)

select
    distributors.distributor_id,
    distributors.distributor_name,
    distributors.distributor_status,
    distributors.trade_discount_pct,
    distributors.onboarded_date,
    distributors.updated_at,
    distributors.market_code,
    markets.market_name,
    markets.region,
    markets.currency_code
from distributors
inner join markets
    on distributors.market_code = markets.market_code
