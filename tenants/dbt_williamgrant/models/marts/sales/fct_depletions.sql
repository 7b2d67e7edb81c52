select
    depletion_id,
    depletion_month,
    distributor_id,
    market_code,
    region,
    sku,
    brand_id,
    channel,
    cases,
    nine_litre_cases
from {{ ref('int_depletions_enriched') }}
