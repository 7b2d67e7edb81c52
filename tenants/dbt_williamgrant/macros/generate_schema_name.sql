{#-
    Schemas are governed by model configs alone: when a node sets a custom
    schema (e.g. `+schema: marts` in dbt_project.yml) it is used verbatim, with
    no `<target.schema>_` prefix. Nodes without a custom schema land in the
    target schema.

    A pull request's CI run passes the var `dbtflow_pr_schema` (e.g.
    `dbt_cloud_pr_1008_42`, docs/ci-jobs.md): every node then lands in
    `<pr schema>_<custom schema>` (or `<pr schema>`), never in a production
    schema. Without the var nothing changes.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set pr_schema = var('dbtflow_pr_schema', none) -%}
    {%- if pr_schema and custom_schema_name is none -%}
        {{ pr_schema | trim | lower }}
    {%- elif pr_schema -%}
        {{ pr_schema | trim | lower }}_{{ custom_schema_name | trim | lower }}
    {%- elif custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim | lower }}
    {%- endif -%}
{%- endmacro %}
