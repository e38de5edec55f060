"""MkDocs hooks: the configuration reference is generated from the code at every build."""

from mkdocs.structure.files import File

from reasonlab.config_keys import reference_markdown


def on_files(files, config):
    files.append(File.generated(config, "configuration-keys.md", content=reference_markdown()))
    return files
