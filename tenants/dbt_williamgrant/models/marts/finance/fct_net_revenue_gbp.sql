{#-
    Net revenue per shipment in GBP: cases x list price in force on the ship
    date x (1 - distributor trade discount) x monthly FX. Shipments with no
    price list entry keep null revenue and has_list_price = false; the
    warn-level not_null test on net_revenue_gbp surfaces them.
-#}

select
    shipment_id,
    ship_date,
    ship_month,
    distributor_id,
    market_code,
    region,
    currency_code,
    sku,
    brand_id,
    cases,
    nine_litre_cases,
    has_list_price,
    price_list_key,
    list_price_per_case,
    trade_discount_pct,
    gbp_per_unit,
    round(gross_revenue_local, 2) as gross_revenue_local,
    round(trade_discount_local, 2) as trade_discount_local,
    round(net_revenue_local, 2) as net_revenue_local,
    round(gross_revenue_gbp, 2) as gross_revenue_gbp,
    round(net_revenue_gbp, 2) as net_revenue_gbp
from {{ ref('int_shipments_priced') }}
