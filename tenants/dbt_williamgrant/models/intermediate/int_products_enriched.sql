with products as (

    select * from {{ ref('stg_products') }}

),

brands as (

    select * from {{ ref('stg_brands') }}

)

select
    products.sku,
    products.product_name,
    products.brand_id,
    brands.brand_name,
    products.product_category,
    products.abv,
    products.bottle_size_ml,
    products.case_size,
    products.launch_date,
    products.is_active,
    products.case_size * products.bottle_size_ml / 1000.0 as litres_per_case,
    -- industry volume unit: one 9-litre case = 12 x 75cl
    cast(products.case_size * products.bottle_size_ml as numeric(18, 6)) / 9000 as nine_litre_factor,
    cast(products.case_size * products.bottle_size_ml * products.abv as numeric(18, 6)) / 100000 as pure_alcohol_litres_per_case
from products
inner join brands
    on products.brand_id = brands.brand_id
