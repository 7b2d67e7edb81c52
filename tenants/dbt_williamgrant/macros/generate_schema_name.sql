{#-
    Schemas are governed by model configs alone: when a node sets a custom
    schema (e.g. `+schema: marts` in dbt_project.yml) it is used verbatim, with
    no `<target.schema>_` prefix. Nodes without a custom schema land in the
    target schema.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim | lower }}
    {%- endif -%}
{%- endmacro %}
