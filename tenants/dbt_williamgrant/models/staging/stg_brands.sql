-- depends_on: {{ ref('brands') }}

with source as (

    select * from {{ source('wg_raw', 'brands') }}

)

select
    brand_id,
    brand_name,
    category as brand_category,
    home_distillery,
    founded_year,
    _loaded_at
from source
