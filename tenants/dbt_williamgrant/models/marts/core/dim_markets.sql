with markets as (

    select * from {{ ref('stg_markets') }}

),

distributors as (

    select * from {{ ref('stg_distributors') }}

),

distributor_counts as (

    select
        market_code,
        count(*) as distributor_count,
        sum(case when distributor_status = 'active' then 1 else 0 end) as active_distributor_count
    from distributors
    group by 1

)

select
    markets.market_code,
    markets.market_name,
    markets.region,
    markets.currency_code,
    markets.market_code = 'GB' as is_home_market,
    coalesce(distributor_counts.distributor_count, 0) as distributor_count,
    coalesce(distributor_counts.active_distributor_count, 0) as active_distributor_count
from markets
left join distributor_counts
    on markets.market_code = distributor_counts.market_code
