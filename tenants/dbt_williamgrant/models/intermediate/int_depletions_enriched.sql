with depletions as (

    select * from {{ ref('stg_depletions') }}

),

products as (

    select * from {{ ref('int_products_enriched') }}

),

distributors as (

    select * from {{ ref('int_distributors_enriched') }}

)

select
    depletions.depletion_id,
    depletions.depletion_month,
    depletions.distributor_id,
    distributors.market_code,
    distributors.region,
    depletions.sku,
    products.brand_id,
    depletions.channel,
    depletions.cases,
    depletions.cases * products.nine_litre_factor as nine_litre_cases
from depletions
inner join products
    on depletions.sku = products.sku
inner join distributors
    on depletions.distributor_id = distributors.distributor_id
