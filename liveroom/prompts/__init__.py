"""The questions: each prompt set's wording, the stage registry (template, schema, parser, features, version) and reply parsing."""
