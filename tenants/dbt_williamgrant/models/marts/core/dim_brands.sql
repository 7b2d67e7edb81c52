with brands as (

    select * from {{ ref('stg_brands') }}

),

products as (

    select * from {{ ref('int_products_enriched') }}

),

sku_counts as (

    select
        brand_id,
        count(*) as sku_count,
        sum(case when is_active then 1 else 0 end) as active_sku_count
    from products
    group by 1

)

select
    brands.brand_id,
    brands.brand_name,
    brands.brand_category,
    case
        when brands.brand_category in ('single_malt', 'blended_malt', 'blended_scotch') then 'scotch_whisky'
        when brands.brand_category = 'irish_whiskey' then 'irish_whiskey'
        else 'white_and_specialty_spirits'
    end as portfolio_segment,
    brands.home_distillery,
    brands.founded_year,
    coalesce(sku_counts.sku_count, 0) as sku_count,
    coalesce(sku_counts.active_sku_count, 0) as active_sku_count
from brands
left join sku_counts
    on brands.brand_id = sku_counts.brand_id
