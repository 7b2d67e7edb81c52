{#-
    One row per shipment with the list price in force on the ship date, the
    distributor's trade discount and the month's FX rate. Shipments without a
    price list entry are kept (has_list_price = false) so volumes still reconcile.
-#}

with shipments as (

    select * from {{ ref('stg_shipments') }}

),

products as (

    select * from {{ ref('int_products_enriched') }}

),

distributors as (

    select * from {{ ref('int_distributors_enriched') }}

),

price_periods as (

    select * from {{ ref('int_price_list_periods') }}

),

fx as (

    select * from {{ ref('stg_fx_rates') }}

),

joined as (

    select
        shipments.shipment_id,
        shipments.ship_date,
        shipments.ship_month,
        shipments.distributor_id,
        distributors.market_code,
        distributors.region,
        distributors.currency_code,
        shipments.sku,
        products.brand_id,
        shipments.cases,
        shipments.cases * products.nine_litre_factor as nine_litre_cases,
        price_periods.price_list_key,
        price_periods.list_price_per_case,
        distributors.trade_discount_pct,
        fx.gbp_per_unit
    from shipments
    inner join products
        on shipments.sku = products.sku
    inner join distributors
        on shipments.distributor_id = distributors.distributor_id
    left join price_periods
        on shipments.sku = price_periods.sku
        and distributors.market_code = price_periods.market_code
        and shipments.ship_date >= price_periods.valid_from
        and (price_periods.valid_to is null or shipments.ship_date < price_periods.valid_to)
    left join fx
        on distributors.currency_code = fx.currency_code
        and shipments.ship_month = fx.rate_month

),

revenue_local as (

    select
        *,
        price_list_key is not null as has_list_price,
        cast(cases * list_price_per_case as numeric(18, 2)) as gross_revenue_local,
        -- widen before multiplying so decimal scales do not overflow on DuckDB
        cast(cast(cases * list_price_per_case as numeric(38, 2)) * trade_discount_pct as numeric(18, 4))
            as trade_discount_local
    from joined

),

revenue_gbp as (

    select
        *,
        gross_revenue_local - trade_discount_local as net_revenue_local,
        cast(cast(gross_revenue_local as numeric(38, 4)) * gbp_per_unit as numeric(18, 4)) as gross_revenue_gbp,
        cast(cast(gross_revenue_local - trade_discount_local as numeric(38, 4)) * gbp_per_unit as numeric(18, 4))
            as net_revenue_gbp
    from revenue_local

)

select * from revenue_gbp
