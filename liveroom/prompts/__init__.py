"""The questions: the stage registry (template, schema, parser, features) and reply parsing."""
