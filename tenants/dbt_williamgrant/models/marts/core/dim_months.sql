select
    month_start,
    month_end,
    quarter_start,
    calendar_year,
    calendar_quarter,
    calendar_month,
    {{ dbt.concat([
        'cast(calendar_year as ' ~ dbt.type_string() ~ ')', "'-Q'",
        'cast(calendar_quarter as ' ~ dbt.type_string() ~ ')'
    ]) }} as year_quarter_label,
    calendar_month in (11, 12) as is_peak_season
from {{ ref('int_months') }}
