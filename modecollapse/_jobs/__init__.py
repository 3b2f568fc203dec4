"""One module per CLI command, each ending in `COMMAND = Command(...)` (`_command`): `_run`,
`_compare`, `_sweep`, `_agreement`, `_flow`, `_design`, `_show_config`. Jobs build on the library,
return records and figures, and never import the CLI. Public through `modecollapse.jobs`."""
