-- Revenue fact must carry exactly the same shipments and volume as the sell-in fact.

with revenue as (

    select count(*) as row_count, sum(cases) as total_cases
    from {{ ref('fct_net_revenue_gbp') }}

),

shipments as (

    select count(*) as row_count, sum(cases) as total_cases
    from {{ ref('fct_shipments') }}

)

select
    revenue.row_count as revenue_rows,
    shipments.row_count as shipment_rows,
    revenue.total_cases as revenue_cases,
    shipments.total_cases as shipment_cases
from revenue
cross join shipments
where revenue.row_count <> shipments.row_count
    or revenue.total_cases <> shipments.total_cases
