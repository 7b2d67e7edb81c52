-- depends_on: {{ ref('distributors') }}

with source as (

    select * from {{ source('wg_raw', 'distributors') }}

)

select
    distributor_id,
    distributor_name,
    upper(market_code) as market_code,
    lower(status) as distributor_status,
    trade_discount_pct,
    onboarded_date,
    updated_at,
    _loaded_at
from source
