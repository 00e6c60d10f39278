//! Plain-text notes, one file per note, in the directory the operator grants at `/notes`.

use std::collections::hash_map::RandomState;
use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

use autoglm_sdk::prelude::*;

mod name;

/// Where the host mounts the granted directory inside the sandbox.
const DIR: &str = "/notes";

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    /// Name of the note: letters, digits, spaces, '_', '-' and '.', e.g. "shopping list".
    name: String,
    /// The full text of the note; replaces any earlier text.
    text: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NameArgs {
    /// Name of the note, as shown by `list`.
    name: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Serialize, JsonSchema)]
struct Written {
    /// Name of the note that was saved.
    name: String,
    /// Size of the saved text in bytes (UTF-8).
    bytes: u64,
}

#[derive(Serialize, JsonSchema)]
struct NoteInfo {
    /// Name of the note.
    name: String,
    /// Size of the note's text in bytes (UTF-8).
    bytes: u64,
}

#[derive(Serialize, JsonSchema)]
struct NoteList {
    /// Every saved note, sorted by name.
    notes: Vec<NoteInfo>,
}

#[derive(Serialize, JsonSchema)]
struct Note {
    /// Name of the note.
    name: String,
    /// The full text of the note.
    text: String,
}

#[derive(Serialize, JsonSchema)]
struct Deleted {
    /// Name of the note that was deleted.
    name: String,
    /// Always true: a note that could not be deleted is reported as an error.
    deleted: bool,
}

fn write(args: WriteArgs) -> Result<Written, ToolError> {
    let path = note_path(&args.name)?;
    let temp = temp_path();
    // Write a temporary file and rename it over the note: readers see either the
    // old note or the whole new one, never a partial write.
    let saved = write_new(&temp, args.text.as_bytes()).and_then(|()| fs::rename(&temp, &path));
    if let Err(e) = saved {
        // Best effort: the note itself is untouched, only the temporary file may remain.
        let _ = fs::remove_file(&temp);
        return Err(ToolError::failed(format!("could not save note '{}': {e}", args.name)));
    }
    Ok(Written { bytes: args.text.len() as u64, name: args.name })
}

fn list(_: NoArgs) -> Result<NoteList, ToolError> {
    check_dir()?;
    let listing_failed =
        |e: io::Error| ToolError::failed(format!("could not list the notes directory: {e}"));
    let mut notes = Vec::new();
    for entry in fs::read_dir(DIR).map_err(listing_failed)? {
        let entry = entry.map_err(listing_failed)?;
        // Temporary and hidden files, and names `read` would refuse, are not notes.
        let Ok(name) = entry.file_name().into_string() else { continue };
        if name::validate(&name).is_err() {
            continue;
        }
        // `file_type` does not follow symlinks; an entry that vanished meanwhile is skipped.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(metadata) = entry.metadata() else { continue };
        notes.push(NoteInfo { name, bytes: metadata.len() });
    }
    notes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(NoteList { notes })
}

fn read(args: NameArgs) -> Result<Note, ToolError> {
    let path = note_path(&args.name)?;
    let bytes = fs::read(&path).map_err(|e| io_failure(e, "read", &args.name))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ToolError::failed(format!("note '{}' is not UTF-8 text", args.name)))?;
    Ok(Note { name: args.name, text })
}

fn delete(args: NameArgs) -> Result<Deleted, ToolError> {
    let path = note_path(&args.name)?;
    fs::remove_file(&path).map_err(|e| io_failure(e, "delete", &args.name))?;
    Ok(Deleted { name: args.name, deleted: true })
}

/// The path of note `name`, after checking the name and that the directory is granted.
fn note_path(name: &str) -> Result<PathBuf, ToolError> {
    name::validate(name).map_err(ToolError::invalid)?;
    check_dir()?;
    Ok(PathBuf::from(DIR).join(name))
}

/// Fail clearly when the operator has not granted the notes directory: without this
/// check a missing grant would look like a missing note.
fn check_dir() -> Result<(), ToolError> {
    let problem = match fs::metadata(DIR) {
        Ok(metadata) if metadata.is_dir() => return Ok(()),
        Ok(_) => "it is not a directory".to_string(),
        Err(e) => e.to_string(),
    };
    Err(ToolError::failed(format!(
        "the notes directory is not available ({problem}); \
         the operator must grant this plugin a directory at {DIR}"
    )))
}

/// A fresh temporary path in the notes directory. The leading '.' keeps it out of
/// `list` and out of reach of any valid note name.
fn temp_path() -> PathBuf {
    // `RandomState` is seeded from the host's random source: no extra dependency.
    let id = RandomState::new().build_hasher().finish();
    PathBuf::from(DIR).join(format!(".{id:016x}.tmp"))
}

/// Create `path` (never replacing an existing file) holding `bytes`, flushed to disk.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    // The rename must not publish a note whose bytes are still only in memory.
    file.sync_all()
}

/// The error for a failed `verb` on note `name`.
fn io_failure(error: io::Error, verb: &str, name: &str) -> ToolError {
    match error.kind() {
        // A directory of that name is not a note either.
        ErrorKind::NotFound | ErrorKind::IsADirectory => {
            ToolError::failed(format!("no note named '{name}'"))
        }
        _ => ToolError::failed(format!("could not {verb} note '{name}': {error}")),
    }
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new("write", "Save a note under a name, replacing any note of that name.", write)
            .output::<Written>()
            .directory(DIR, Access::ReadWrite)
            .destructive()
            .idempotent(),
        Tool::new("list", "List the names and sizes of all saved notes.", list)
            .output::<NoteList>()
            .directory(DIR, Access::ReadOnly)
            .read_only()
            .idempotent(),
        Tool::new("read", "Read the full text of the note with the given name.", read)
            .output::<Note>()
            .directory(DIR, Access::ReadOnly)
            .read_only()
            .idempotent(),
        Tool::new("delete", "Delete the note with the given name.", delete)
            .output::<Deleted>()
            .directory(DIR, Access::ReadWrite)
            .destructive()
            .idempotent(),
    ]
}

export_plugin!(tools);
