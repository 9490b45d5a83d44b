//! `ioConfig`: where rows come from (`inputSource`: local files, inline text, HTTP(S)
//! URIs, S3 objects) and how they are read (`inputFormat`: JSON, CSV or Parquet; text
//! files named `.gz` or `.zst` are decompressed, as Druid does).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::check_section_type;
use super::json::{
    JsonPath, from_map, invalid_at, parse_object, required, typed_object, unsupported_field,
};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum InputSource {
    /// {"type":"local","baseDir":..,"filter":"*.json"} and/or {"type":"local","files":[..]}
    /// Resolved to concrete, sorted file paths (relative paths are relative to the
    /// directory of the spec file); a baseDir+filter matching nothing is an error.
    /// Parsed by [`IngestionSpec::check_json`](super::IngestionSpec::check_json),
    /// which leaves the files to the machine that reads them: `files` is empty.
    Local { files: Vec<PathBuf> },
    /// {"type":"inline","data":"..."}: the rows in the spec itself.
    Inline { data: String },
    /// {"type":"http","uris":[..],"httpAuthenticationUsername":..,
    /// "httpAuthenticationPassword":..}
    Http {
        uris: Vec<String>,
        username: Option<String>,
        password: Option<String>,
    },
    /// {"type":"s3","uris":[..],"prefixes":[..],"objects":[{"bucket","path"}],
    /// "properties":{"accessKeyId","secretAccessKey"}}: the objects named, and every
    /// object under each prefix. The endpoint and region come from the usual `AWS_*`
    /// variables of the process that reads.
    S3 {
        /// `s3://bucket/key` of every object named directly.
        uris: Vec<String>,
        /// `s3://bucket/prefix` whose objects are all read.
        prefixes: Vec<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum InputFormat {
    /// {"type":"json"} newline-delimited
    Json,
    /// {"type":"csv","columns":[..],"findColumnsFromHeader":bool,"skipHeaderRows":n}
    /// Druid rule: findColumnsFromHeader defaults to false when columns is given,
    /// and it is an error to give neither.
    Csv {
        columns: Option<Vec<String>>,
        find_columns_from_header: bool,
        skip_header_rows: usize,
    },
    /// {"type":"parquet"} (binaryAsString accepted)
    Parquet,
}

// ---------------------------------------------------------------------------------
// ioConfig
// ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIoConfig {
    #[serde(rename = "type")]
    kind: Option<String>,
    input_source: Option<Value>,
    input_format: Option<Value>,
    append_to_existing: Option<bool>,
    drop_existing: Option<bool>,
}

/// The parsed `ioConfig`.
pub(super) struct IoConfig {
    pub(super) input: InputSource,
    pub(super) format: InputFormat,
    pub(super) append_to_existing: bool,
}

pub(super) fn parse_io_config(
    value: Value,
    path: &JsonPath,
    task_type: &str,
    base_dir: Option<&Path>,
) -> Result<IoConfig> {
    let raw: RawIoConfig = parse_object(value, path)?;
    check_section_type(raw.kind.as_deref(), task_type, &path.field("type"))?;
    if raw.drop_existing == Some(true) {
        return Err(unsupported_field(
            &path.field("dropExisting"),
            "dropping existing segments is not supported; only false is accepted",
        ));
    }
    let source_path = path.field("inputSource");
    let input = parse_input_source(
        required(raw.input_source, &source_path)?,
        &source_path,
        base_dir,
    )?;
    let format_path = path.field("inputFormat");
    let format = parse_input_format(required(raw.input_format, &format_path)?, &format_path)?;
    Ok(IoConfig {
        input,
        format,
        append_to_existing: raw.append_to_existing.unwrap_or(false),
    })
}

// ---------------------------------------------------------------------------------
// inputSource
// ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLocalSource {
    base_dir: Option<String>,
    filter: Option<String>,
    files: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInlineSource {
    data: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawHttpSource {
    uris: Option<Vec<String>>,
    http_authentication_username: Option<String>,
    http_authentication_password: Option<Value>,
    /// Druid's list of allowed protocols; Grove reads http and https.
    #[serde(rename = "allowedProtocols")]
    _allowed_protocols: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3Object {
    bucket: String,
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawS3Source {
    uris: Option<Vec<String>>,
    prefixes: Option<Vec<String>>,
    objects: Option<Vec<RawS3Object>>,
    properties: Option<RawS3Properties>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawS3Properties {
    access_key_id: Option<Value>,
    secret_access_key: Option<Value>,
}

/// `base_dir` resolves the local files; without one, only the source's shape is
/// checked and it lists no files.
fn parse_input_source(
    value: Value,
    path: &JsonPath,
    base_dir: Option<&Path>,
) -> Result<InputSource> {
    let (kind, map) = typed_object(value, path)?;
    let type_path = path.field("type");
    let kind = required(kind, &type_path)?;
    match kind.as_str() {
        "local" => {
            let raw: RawLocalSource = from_map(map, path)?;
            let files = match base_dir {
                Some(base_dir) => resolve_local_files(raw, path, base_dir)?,
                None => {
                    check_local_shape(&raw, path)?;
                    Vec::new()
                }
            };
            Ok(InputSource::Local { files })
        }
        "inline" => {
            let raw: RawInlineSource = from_map(map, path)?;
            let data = required(raw.data, &path.field("data"))?;
            Ok(InputSource::Inline { data })
        }
        "http" => {
            let raw: RawHttpSource = from_map(map, path)?;
            let uris_path = path.field("uris");
            let uris = required(raw.uris, &uris_path)?;
            if uris.is_empty() {
                return Err(invalid_at(&uris_path, "names no URIs"));
            }
            for (i, uri) in uris.iter().enumerate() {
                let scheme = uri.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
                if !matches!(scheme.as_deref(), Some("http" | "https")) {
                    return Err(invalid_at(
                        &uris_path.index(i),
                        format!("{uri:?} is not an http:// or https:// URI"),
                    ));
                }
            }
            let password_path = path.field("httpAuthenticationPassword");
            let password = raw
                .http_authentication_password
                .map(|p| password(p, &password_path))
                .transpose()?;
            Ok(InputSource::Http {
                uris,
                username: raw.http_authentication_username,
                password,
            })
        }
        "s3" => parse_s3_source(from_map(map, path)?, path),
        other => Err(invalid_at(
            &type_path,
            format!(
                "unsupported input source type {other:?}: expected \"local\", \"inline\", \
                 \"http\" or \"s3\""
            ),
        )),
    }
}

fn parse_s3_source(raw: RawS3Source, path: &JsonPath) -> Result<InputSource> {
    let check = |list: &[String], field: &str| -> Result<()> {
        for (i, uri) in list.iter().enumerate() {
            let fine = uri
                .strip_prefix("s3://")
                .is_some_and(|rest| rest.split('/').next().is_some_and(|b| !b.is_empty()));
            if !fine {
                return Err(invalid_at(
                    &path.field(field).index(i),
                    format!("{uri:?} is not an s3://bucket/... URI"),
                ));
            }
        }
        Ok(())
    };
    let mut uris = raw.uris.unwrap_or_default();
    check(&uris, "uris")?;
    let prefixes = raw.prefixes.unwrap_or_default();
    check(&prefixes, "prefixes")?;
    for object in raw.objects.unwrap_or_default() {
        uris.push(format!(
            "s3://{}/{}",
            object.bucket,
            object.path.trim_start_matches('/')
        ));
    }
    if uris.is_empty() && prefixes.is_empty() {
        return Err(invalid_at(
            path,
            "names no objects: give uris, prefixes or objects",
        ));
    }
    let properties_path = path.field("properties");
    let (access_key_id, secret_access_key) = match raw.properties {
        None => (None, None),
        Some(p) => (
            p.access_key_id
                .map(|v| password(v, &properties_path.field("accessKeyId")))
                .transpose()?,
            p.secret_access_key
                .map(|v| password(v, &properties_path.field("secretAccessKey")))
                .transpose()?,
        ),
    };
    Ok(InputSource::S3 {
        uris,
        prefixes,
        access_key_id,
        secret_access_key,
    })
}

/// A secret as Druid's password providers give it: a string, or
/// `{"type": "default", "password": "..."}`, or `{"type": "environment", "variable":
/// "NAME"}` (read from the environment of the process that reads the input).
fn password(value: Value, path: &JsonPath) -> Result<String> {
    match value {
        Value::String(s) => Ok(s),
        Value::Object(map) => match map.get("type").and_then(Value::as_str) {
            Some("default") => map
                .get("password")
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| invalid_at(&path.field("password"), "a string is required")),
            Some("environment") => {
                let variable = map
                    .get("variable")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid_at(&path.field("variable"), "a string is required"))?;
                Ok(std::env::var(variable).unwrap_or_default())
            }
            other => Err(invalid_at(
                &path.field("type"),
                format!(
                    "unsupported password provider {other:?}: use \"default\" or \"environment\""
                ),
            )),
        },
        _ => Err(invalid_at(
            path,
            "expected a string or a password provider object",
        )),
    }
}

/// Resolves a local input source to the files it names: the files in `baseDir` whose
/// names match `filter`, plus every listed file, sorted and without repeats so a file
/// named both ways is read once.
fn resolve_local_files(
    raw: RawLocalSource,
    path: &JsonPath,
    base_dir: &Path,
) -> Result<Vec<PathBuf>> {
    check_local_shape(&raw, path)?;
    let mut files = match (raw.base_dir, raw.filter) {
        (Some(dir), Some(filter)) => list_matching_files(&base_dir.join(dir), &filter, path)?,
        _ => Vec::new(),
    };
    let files_path = path.field("files");
    for (i, file) in raw.files.unwrap_or_default().into_iter().enumerate() {
        files.push(existing_file(base_dir.join(file), &files_path.index(i))?);
    }
    if files.is_empty() {
        return Err(invalid_at(
            path,
            "names no input files: give baseDir and filter, or files",
        ));
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// What a local source must say, wherever its files are: a baseDir with a filter that
/// matches names, or files, or both.
fn check_local_shape(raw: &RawLocalSource, path: &JsonPath) -> Result<()> {
    match (&raw.base_dir, &raw.filter) {
        (Some(_), None) => Err(invalid_at(path, "baseDir needs a filter (e.g. \"*.json\")")),
        (None, Some(_)) => Err(invalid_at(path, "filter needs a baseDir")),
        (Some(_), Some(pattern)) if pattern.contains(['/', '\\']) => Err(invalid_at(
            &path.field("filter"),
            format!("{pattern:?} must match file names in baseDir, not paths"),
        )),
        (None, None) if raw.files.as_ref().is_none_or(Vec::is_empty) => Err(invalid_at(
            path,
            "names no input files: give baseDir and filter, or files",
        )),
        _ => Ok(()),
    }
}

/// Lists the regular files directly in `dir` (not in subdirectories) whose names match
/// `pattern`, sorted by name. Matching nothing is an error: an ingestion that reads no
/// rows is almost always a mistyped directory or pattern. `pattern` names files, never
/// paths ([`check_local_shape`]).
fn list_matching_files(dir: &Path, pattern: &str, path: &JsonPath) -> Result<Vec<PathBuf>> {
    let read_error = |e: io::Error| {
        Error::io(
            format!(
                "{}: cannot read input directory {}",
                path.field("baseDir"),
                dir.display()
            ),
            e,
        )
    };
    let mut matches = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let entry_path = entry.map_err(read_error)?.path();
        let matched = entry_path
            .file_name()
            .is_some_and(|name| glob_matches(pattern, &name.to_string_lossy()));
        // Anything but a directory: regular files, and named pipes a process writes.
        if matched && !entry_path.is_dir() {
            matches.push(entry_path);
        }
    }
    if matches.is_empty() {
        return Err(invalid_at(
            path,
            format!("no file in {} matches filter {pattern:?}", dir.display()),
        ));
    }
    matches.sort();
    Ok(matches)
}

/// Matches a file name against a glob where `*` is any run of characters and `?` any
/// one character; everything else is literal, as in Druid's wildcard file filter.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // The most recent `*`: the pattern position after it and the name position it has
    // absorbed up to. On a mismatch, the star absorbs one more character and we retry.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                p += 1;
                star = Some((p, n));
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((after_star, absorbed)) => {
                    p = after_star;
                    n = absorbed + 1;
                    star = Some((after_star, n));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Checks a listed input file up front, so a typo fails the spec rather than the
/// ingestion halfway through.
fn existing_file(file: PathBuf, path: &JsonPath) -> Result<PathBuf> {
    match fs::metadata(&file) {
        Ok(meta) if !meta.is_dir() => Ok(file),
        Ok(_) => Err(invalid_at(
            path,
            format!("{} is not a file", file.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(invalid_at(
            path,
            format!("input file {} does not exist", file.display()),
        )),
        Err(e) => Err(Error::io(
            format!("{path}: cannot read input file {}", file.display()),
            e,
        )),
    }
}

// ---------------------------------------------------------------------------------
// inputFormat
// ---------------------------------------------------------------------------------

/// `{"type":"json"}` takes no options: Druid's (flattenSpec, featureSpec, ..) all change
/// how rows are read in ways Grove does not implement.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJsonFormat {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCsvFormat {
    columns: Option<Vec<String>>,
    find_columns_from_header: Option<bool>,
    skip_header_rows: Option<usize>,
    list_delimiter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParquetFormat {
    /// Grove always reads Parquet binary columns without a logical type as UTF-8, which
    /// is what `binaryAsString: true` asks for; the flag is only type-checked.
    #[serde(rename = "binaryAsString")]
    _binary_as_string: Option<bool>,
}

pub(super) fn parse_input_format(value: Value, path: &JsonPath) -> Result<InputFormat> {
    let (kind, map) = typed_object(value, path)?;
    let type_path = path.field("type");
    match required(kind, &type_path)?.as_str() {
        "json" => from_map::<RawJsonFormat>(map, path).map(|_| InputFormat::Json),
        "csv" => csv_format(from_map(map, path)?, path),
        "parquet" => from_map::<RawParquetFormat>(map, path).map(|_| InputFormat::Parquet),
        other => Err(invalid_at(
            &type_path,
            format!("unsupported input format {other:?}: expected json, csv or parquet"),
        )),
    }
}

/// Applies Druid's CSV rules: an empty `columns` counts as absent; without columns the
/// header must supply them, and with them `findColumnsFromHeader` defaults to false.
fn csv_format(raw: RawCsvFormat, path: &JsonPath) -> Result<InputFormat> {
    if raw.list_delimiter.is_some() {
        return Err(unsupported_field(
            &path.field("listDelimiter"),
            "multi-value CSV columns are not supported",
        ));
    }
    let columns = raw.columns.filter(|columns| !columns.is_empty());
    if let Some(columns) = &columns {
        check_unique_csv_columns(columns, &path.field("columns"))?;
    }
    let find_columns_from_header = match (&columns, raw.find_columns_from_header) {
        (None, Some(true)) => true,
        (None, _) => {
            return Err(invalid_at(
                path,
                "give columns, or set findColumnsFromHeader to true to read them from \
                 the header row",
            ));
        }
        (Some(_), find) => find.unwrap_or(false),
    };
    Ok(InputFormat::Csv {
        columns,
        find_columns_from_header,
        skip_header_rows: raw.skip_header_rows.unwrap_or(0),
    })
}

/// Two CSV columns with one name would make every row's value for it ambiguous.
fn check_unique_csv_columns(columns: &[String], path: &JsonPath) -> Result<()> {
    let mut seen = HashSet::new();
    match columns.iter().find(|column| !seen.insert(column.as_str())) {
        Some(column) => Err(invalid_at(path, format!("duplicate column {column:?}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::IngestionSpec;
    use crate::spec::fixture::{
        TempDir, assert_contains, error_of, minimal, parse, parse_edited, set,
    };

    #[test]
    fn resolves_listed_files_against_the_spec_directory() {
        let dir = TempDir::new(&["data.json", "more/b.json"]);
        let mut spec = minimal();
        let absolute = dir.path("more/b.json").display().to_string();
        set(
            &mut spec,
            "/spec/ioConfig/inputSource/files",
            json!(["data.json", absolute]),
        );
        let parsed = parse(&spec, &dir).unwrap();
        assert_eq!(
            parsed.input,
            InputSource::Local {
                files: vec![dir.path("data.json"), dir.path("more/b.json")]
            }
        );
    }

    #[test]
    fn a_server_checks_the_source_but_leaves_its_files_to_the_task() {
        let mut spec = minimal();
        set(
            &mut spec,
            "/spec/ioConfig/inputSource",
            json!({"type": "local", "baseDir": "/nowhere/on/this/machine", "filter": "*.json"}),
        );
        let checked = IngestionSpec::check_json(&spec.to_string()).unwrap();
        assert_eq!(checked.input, InputSource::Local { files: vec![] });

        for (source, expected) in [
            (
                json!({"type": "local", "baseDir": "/d"}),
                "baseDir needs a filter",
            ),
            (
                json!({"type": "local", "filter": "*"}),
                "filter needs a baseDir",
            ),
            (
                json!({"type": "local", "files": []}),
                "names no input files",
            ),
            (
                json!({"type": "local", "baseDir": "/d", "filter": "a/*"}),
                "not paths",
            ),
        ] {
            set(&mut spec, "/spec/ioConfig/inputSource", source);
            let message = IngestionSpec::check_json(&spec.to_string())
                .unwrap_err()
                .to_string();
            assert_contains(&message, "spec.ioConfig.inputSource");
            assert_contains(&message, expected);
        }
    }

    #[test]
    fn parses_csv_with_columns() {
        let spec = parse_edited(|s| {
            let format =
                json!({"type": "csv", "columns": ["timestamp", "page"], "skipHeaderRows": 2});
            set(s, "/spec/ioConfig/inputFormat", format);
        })
        .unwrap();
        assert_eq!(
            spec.format,
            InputFormat::Csv {
                columns: Some(vec!["timestamp".into(), "page".into()]),
                find_columns_from_header: false,
                skip_header_rows: 2,
            }
        );
    }

    #[test]
    fn parses_csv_with_header() {
        let spec = parse_edited(|s| {
            let format = json!({"type": "csv", "columns": [], "findColumnsFromHeader": true});
            set(s, "/spec/ioConfig/inputFormat", format);
        })
        .unwrap();
        assert_eq!(
            spec.format,
            InputFormat::Csv {
                columns: None,
                find_columns_from_header: true,
                skip_header_rows: 0
            }
        );
    }

    #[test]
    fn rejects_bad_csv_formats() {
        let message = error_of(|s| set(s, "/spec/ioConfig/inputFormat", json!({"type": "csv"})));
        assert_contains(&message, "spec.ioConfig.inputFormat: give columns");
        let message = error_of(|s| {
            let format = json!({"type": "csv", "columns": ["a"], "listDelimiter": "|"});
            set(s, "/spec/ioConfig/inputFormat", format);
        });
        assert_contains(
            &message,
            "unsupported field \"spec.ioConfig.inputFormat.listDelimiter\"",
        );
        let message = error_of(|s| {
            set(
                s,
                "/spec/ioConfig/inputFormat",
                json!({"type": "csv", "columns": ["a", "a"]}),
            );
        });
        assert_contains(
            &message,
            "spec.ioConfig.inputFormat.columns: duplicate column \"a\"",
        );
    }

    #[test]
    fn parses_parquet() {
        let spec = parse_edited(|s| {
            set(
                s,
                "/spec/ioConfig/inputFormat",
                json!({"type": "parquet", "binaryAsString": true}),
            );
        })
        .unwrap();
        assert_eq!(spec.format, InputFormat::Parquet);
        let message = error_of(|s| {
            set(
                s,
                "/spec/ioConfig/inputFormat",
                json!({"type": "parquet", "flattenSpec": {}}),
            );
        });
        assert_contains(
            &message,
            "unsupported field \"spec.ioConfig.inputFormat.flattenSpec\"",
        );
        let message = error_of(|s| set(s, "/spec/ioConfig/inputFormat", json!({"type": "tsv"})));
        assert_contains(
            &message,
            "spec.ioConfig.inputFormat.type: unsupported input format \"tsv\"",
        );
    }

    #[test]
    fn rejects_a_filter_matching_no_file() {
        let dir = TempDir::new(&["data/a.csv"]);
        let mut spec = minimal();
        let source = json!({"type": "local", "baseDir": "data", "filter": "*.json"});
        set(&mut spec, "/spec/ioConfig/inputSource", source);
        let message = parse(&spec, &dir).unwrap_err().to_string();
        assert_contains(&message, "spec.ioConfig.inputSource: no file in");
        assert_contains(&message, &dir.path("data").display().to_string());
        assert_contains(&message, "\"*.json\"");
    }

    #[test]
    fn unreadable_base_dir_is_an_io_error_naming_it() {
        let err = parse_edited(|s| {
            let source = json!({"type": "local", "baseDir": "absent", "filter": "*"});
            set(s, "/spec/ioConfig/inputSource", source);
        })
        .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert_contains(&err.to_string(), "cannot read input directory");
        assert_contains(&err.to_string(), "absent");
    }

    #[test]
    fn rejects_a_missing_listed_file() {
        let message = error_of(|s| {
            set(
                s,
                "/spec/ioConfig/inputSource/files",
                json!(["data.json", "gone.json"]),
            );
        });
        assert_contains(&message, "spec.ioConfig.inputSource.files[1]: input file");
        assert_contains(&message, "gone.json does not exist");
    }

    #[test]
    fn rejects_unsupported_input_sources() {
        let message = error_of(|s| {
            set(
                s,
                "/spec/ioConfig/inputSource",
                json!({"type": "hdfs", "paths": "/x"}),
            );
        });
        assert_contains(
            &message,
            "spec.ioConfig.inputSource.type: unsupported input source type \"hdfs\"",
        );
        let message = error_of(|s| set(s, "/spec/ioConfig/inputSource", json!({"type": "local"})));
        assert_contains(&message, "spec.ioConfig.inputSource: names no input files");
    }

    #[test]
    fn parses_inline_http_and_s3_sources_as_druid_writes_them() {
        let source = |value: Value| {
            parse_edited(|s| set(s, "/spec/ioConfig/inputSource", value)).map(|spec| spec.input)
        };
        assert_eq!(
            source(json!({"type": "inline", "data": "{\"a\":1}\n"})).unwrap(),
            InputSource::Inline {
                data: "{\"a\":1}\n".into()
            }
        );
        assert_eq!(
            source(json!({
                "type": "http",
                "uris": ["https://example.com/a.json.gz"],
                "httpAuthenticationUsername": "u",
                "httpAuthenticationPassword": {"type": "default", "password": "p"}
            }))
            .unwrap(),
            InputSource::Http {
                uris: vec!["https://example.com/a.json.gz".into()],
                username: Some("u".into()),
                password: Some("p".into()),
            }
        );
        assert_eq!(
            source(json!({
                "type": "s3",
                "uris": ["s3://b/k.json"],
                "prefixes": ["s3://b/dir/"],
                "objects": [{"bucket": "c", "path": "x/y.json"}],
                "properties": {"accessKeyId": "id", "secretAccessKey": {"type": "default", "password": "s"}}
            }))
            .unwrap(),
            InputSource::S3 {
                uris: vec!["s3://b/k.json".into(), "s3://c/x/y.json".into()],
                prefixes: vec!["s3://b/dir/".into()],
                access_key_id: Some("id".into()),
                secret_access_key: Some("s".into()),
            }
        );
        for (value, expected) in [
            (
                json!({"type": "inline"}),
                "missing required field \"spec.ioConfig.inputSource.data\"",
            ),
            (
                json!({"type": "http", "uris": []}),
                "inputSource.uris: names no URIs",
            ),
            (
                json!({"type": "http", "uris": ["file:///etc/passwd"]}),
                "uris[0]: \"file:///etc/passwd\" is not an http",
            ),
            (
                json!({"type": "s3", "uris": ["b/k"]}),
                "uris[0]: \"b/k\" is not an s3://bucket",
            ),
            (json!({"type": "s3"}), "names no objects"),
            (
                json!({"type": "http", "uris": ["http://h/x"], "httpAuthenticationPassword": 5}),
                "httpAuthenticationPassword: expected a string",
            ),
        ] {
            let message = source(value).unwrap_err().to_string();
            assert_contains(&message, expected);
        }
    }

    #[test]
    fn glob_matches_stars_and_question_marks() {
        assert!(glob_matches("*.json", "a.json"));
        assert!(glob_matches("*.json", ".json"));
        assert!(!glob_matches("*.json", "a.json.gz"));
        assert!(glob_matches("part-??.csv", "part-01.csv"));
        assert!(!glob_matches("part-??.csv", "part-1.csv"));
        assert!(glob_matches("*a*b*", "xaxxbx"));
        assert!(!glob_matches("*a*b", "xaxxbx"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("[ab].txt", "[ab].txt"));
        assert!(!glob_matches("[ab].txt", "a.txt"));
    }
}
