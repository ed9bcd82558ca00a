//! Reading an experiment file: YAML or JSON, from a path or standard input,
//! with errors that name the offending field and, in YAML, its line.

use std::{
    fmt, fs,
    io::{self, Read},
    path::Path,
};

use super::Experiment;

/// How an experiment file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Yaml,
    Json,
}

impl FileFormat {
    /// By extension when it says, else by content: JSON documents start with `{`.
    pub fn detect(path: &Path, text: &str) -> Self {
        match path.extension().and_then(|ext| ext.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Self::Json,
            Some(ext) if ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml") => {
                Self::Yaml
            }
            _ if text.trim_start().starts_with('{') => Self::Json,
            _ => Self::Yaml,
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Yaml => "YAML",
            Self::Json => "JSON",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read experiment file {file}")]
    Read { file: String, source: io::Error },
    #[error("invalid experiment file {file} ({format}): {message}")]
    Invalid {
        file: String,
        format: FileFormat,
        message: String,
    },
}

/// Reads an experiment file; `-` reads standard input.
pub fn load(path: &Path) -> Result<Experiment, SpecError> {
    let file = if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    };
    let text = if path == Path::new("-") {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        fs::read_to_string(path)
    }
    .map_err(|source| SpecError::Read {
        file: file.clone(),
        source,
    })?;
    let format = FileFormat::detect(path, &text);
    parse(&text, format).map_err(|message| SpecError::Invalid {
        file,
        format,
        message,
    })
}

/// Parses an experiment document. The error names the offending field: serde
/// reports unknown fields by name, and YAML errors carry the path to them.
pub fn parse(text: &str, format: FileFormat) -> Result<Experiment, String> {
    if text.trim().is_empty() {
        return Err("the file is empty".to_owned());
    }
    match format {
        FileFormat::Yaml => yaml_serde::from_str(text).map_err(|err| err.to_string()),
        FileFormat::Json => {
            let deserializer = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(deserializer).map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                if path == "." {
                    inner.to_string()
                } else {
                    format!("{path}: {inner}")
                }
            })
        }
    }
}
