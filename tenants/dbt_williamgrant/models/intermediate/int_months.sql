{#- Month spine for the reporting window [reporting_start_date, reporting_end_date). -#}
{%- set start_date = "cast('" ~ var('reporting_start_date') ~ "' as date)" -%}
{%- set end_date = "cast('" ~ var('reporting_end_date') ~ "' as date)" -%}

with spine as (

    {{ dbt.date_spine('month', start_date, end_date) }}

),

months as (

    select cast(date_month as date) as month_start
    from spine
    where date_month < {{ end_date }}

)

select
    month_start,
    cast({{ dbt.dateadd('day', -1, dbt.dateadd('month', 1, 'month_start')) }} as date) as month_end,
    cast({{ dbt.date_trunc('quarter', 'month_start') }} as date) as quarter_start,
    extract(year from month_start) as calendar_year,
    extract(quarter from month_start) as calendar_quarter,
    extract(month from month_start) as calendar_month
from months
