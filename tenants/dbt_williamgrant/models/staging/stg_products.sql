-- depends_on: {{ ref('products') }}

with source as (

    select * from {{ source('wg_raw', 'products') }}

)

select
    sku,
    brand_id,
    product_name,
    category as product_category,
    abv,
    bottle_size_ml,
    case_size,
    launch_date,
    is_active,
    _loaded_at
from source
