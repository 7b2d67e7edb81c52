with products as (

    select * from {{ ref('int_products_enriched') }}

),

first_shipments as (

    select
        sku,
        min(ship_date) as first_ship_date,
        max(ship_date) as last_ship_date
    from {{ ref('stg_shipments') }}
    group by 1

)

select
    products.sku,
    products.product_name,
    {{ dbt.concat([
        'products.product_name', "' '",
        'cast(products.bottle_size_ml / 10 as ' ~ dbt.type_int() ~ ')', "'cl'"
    ]) }} as product_display_name,
    products.brand_id,
    products.brand_name,
    products.product_category,
    products.abv,
    products.bottle_size_ml,
    products.case_size,
    products.litres_per_case,
    products.nine_litre_factor,
    products.pure_alcohol_litres_per_case,
    products.launch_date,
    products.is_active,
    first_shipments.first_ship_date,
    first_shipments.last_ship_date
from products
left join first_shipments
    on products.sku = first_shipments.sku
