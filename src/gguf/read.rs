//! Reading a GGUF file: typed metadata look-ups, tensor headers, and dequantized tensors through
//! candle's `gguf_file` reader. Failures name the file, the key or the tensor involved.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};

/// Tensor storage types tunescope can dequantize (every type candle's CPU backend reads).
pub const SUPPORTED_TYPES: &[GgmlDType] = &[
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// The names llama.cpp uses for its tensor types (`ggml_type`), by type id.
pub fn ggml_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

/// llama.cpp's name of a candle tensor type (`Q4_K`, not `Q4K`).
pub fn type_name(dtype: GgmlDType) -> &'static str {
    match dtype {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// Comma-separated names of [`SUPPORTED_TYPES`].
pub fn supported_type_list() -> String {
    SUPPORTED_TYPES
        .iter()
        .map(|t| type_name(*t))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An open GGUF file: its metadata and tensor headers, with tensors read on demand.
pub struct GgufFile {
    path: PathBuf,
    reader: BufReader<File>,
    content: Content,
}

impl GgufFile {
    /// Reads the header (metadata and tensor table); tensor data stays on disk.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)
            .with_context(|| format!("cannot open GGUF file {}", path.display()))?;
        let mut reader = BufReader::new(file);
        let content = match Content::read(&mut reader) {
            Ok(content) => content,
            Err(e) => {
                let e = plain(e);
                // candle reports an unknown tensor type by number only; find the tensor and name both.
                if let Ok(Some((tensor, id))) = first_unknown_type(path) {
                    let kind = ggml_type_name(id)
                        .map(|n| format!("{n} (type {id})"))
                        .unwrap_or_else(|| format!("type {id}"));
                    bail!(
                        "{}: tensor {tensor} is stored as {kind}, which tunescope cannot dequantize; supported: {}",
                        path.display(),
                        supported_type_list()
                    );
                }
                bail!(
                    "{} is not a readable GGUF file ({e}); check that the download is complete",
                    path.display()
                );
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            content,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metadata entries.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// One metadata entry.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn type_error(&self, key: &str, expected: &str, value: &Value) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: metadata key `{key}` should be {expected}, found {:?}",
            self.path.display(),
            value.value_type()
        )
    }

    fn missing(&self, key: &str) -> anyhow::Error {
        anyhow::anyhow!("{}: metadata key `{key}` is missing", self.path.display())
    }

    /// A string entry, if present.
    pub fn str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.type_error(key, "a string", v)),
        }
    }

    /// A required string entry.
    pub fn req_str(&self, key: &str) -> Result<&str> {
        self.str(key)?.ok_or_else(|| self.missing(key))
    }

    /// A non-negative integer entry (any integer width), if present.
    pub fn usize(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        int_value(v)
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| self.type_error(key, "a non-negative integer", v))
    }

    /// A required non-negative integer entry.
    pub fn req_usize(&self, key: &str) -> Result<usize> {
        self.usize(key)?.ok_or_else(|| self.missing(key))
    }

    /// A number entry, if present. `f32` values are read through their shortest decimal form,
    /// so `1e-5` stored as f32 comes back as `1e-5`, not `9.99999974e-6`.
    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::F32(x) => x.to_string().parse::<f64>().ok(),
            Value::F64(x) => Some(*x),
            other => int_value(other).map(|n| n as f64),
        };
        n.map(Some)
            .ok_or_else(|| self.type_error(key, "a number", v))
    }

    /// A boolean entry, if present.
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.type_error(key, "true or false", v)),
        }
    }

    /// An array of strings, if present.
    pub fn str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.type_error(key, "an array of strings", v));
        };
        items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.type_error(key, "an array of strings", other)),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// An array of integers, if present.
    pub fn int_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.type_error(key, "an array of integers", v));
        };
        items
            .iter()
            .map(|item| {
                int_value(item).ok_or_else(|| self.type_error(key, "an array of integers", item))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Names of all tensors, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .content
            .tensor_infos
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    /// Whether the file holds a tensor of that name.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Storage type and shape (row-major, outermost first, as in PyTorch) of one tensor.
    pub fn tensor_info(&self, name: &str) -> Option<(GgmlDType, &[usize])> {
        self.content
            .tensor_infos
            .get(name)
            .map(|info| (info.ggml_dtype, info.shape.dims()))
    }

    /// Reads one tensor and dequantizes it to f32 on the CPU.
    pub fn dequantize(&mut self, name: &str) -> Result<Tensor> {
        let (dtype, dims) = self
            .tensor_info(name)
            .with_context(|| format!("{}: no tensor named {name}", self.path.display()))?;
        // candle reads the data as a slice of blocks: a shape whose element count overflows
        // panics there, and an empty one aborts the process (a dangling, unaligned pointer).
        match dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
            Some(0) | None => bail!(
                "{}: tensor {name} has shape {dims:?}, {}; the file is corrupt (re-download or \
                 re-convert it)",
                self.path.display(),
                if dims.contains(&0) {
                    "no elements"
                } else {
                    "too many elements to address"
                }
            ),
            Some(_) => {}
        }
        if !SUPPORTED_TYPES.contains(&dtype) {
            bail!(
                "{}: tensor {name} is stored as {}, which tunescope cannot dequantize; supported: {}",
                self.path.display(),
                type_name(dtype),
                supported_type_list()
            );
        }
        let qtensor = self
            .content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .map_err(plain)
            .with_context(|| {
                format!(
                    "cannot read tensor {name} ({}) from {}",
                    type_name(dtype),
                    self.path.display()
                )
            })?;
        Ok(qtensor)
    }
}

/// A candle error without the backtrace candle attaches when `RUST_BACKTRACE` is set, so the
/// message stays one line.
pub fn plain(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => plain(*inner),
        candle_core::Error::Context { inner, context } => candle_core::Error::Context {
            inner: Box::new(plain(*inner)),
            context,
        },
        candle_core::Error::WithPath { inner, path } => candle_core::Error::WithPath {
            inner: Box::new(plain(*inner)),
            path,
        },
        other => other,
    }
}

fn int_value(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(n) => *n as i64,
        Value::I8(n) => *n as i64,
        Value::U16(n) => *n as i64,
        Value::I16(n) => *n as i64,
        Value::U32(n) => *n as i64,
        Value::I32(n) => *n as i64,
        Value::U64(n) => i64::try_from(*n).ok()?,
        Value::I64(n) => *n,
        _ => return None,
    })
}

/// Walks the GGUF header without interpreting tensor types, returning the first tensor whose type
/// candle does not know (only used to explain a failed read).
fn first_unknown_type(path: &Path) -> Result<Option<(String, u32)>> {
    let mut r = BufReader::new(File::open(path)?);
    let file_len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != b"GGUF" {
        return Ok(None);
    }
    let version = read_u32(&mut r)?;
    let wide = version >= 2;
    let len = |r: &mut BufReader<File>| -> Result<u64> {
        if wide {
            read_u64(r)
        } else {
            read_u32(r).map(u64::from)
        }
    };
    let n_tensors = len(&mut r)?;
    let n_kv = len(&mut r)?;
    let skip_string = |r: &mut BufReader<File>| -> Result<String> {
        let n = len(r)?;
        if n > file_len {
            bail!("string longer than the file");
        }
        let mut bytes = vec![0u8; n as usize];
        r.read_exact(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    fn skip_value(
        r: &mut BufReader<File>,
        ty: u32,
        skip_string: &dyn Fn(&mut BufReader<File>) -> Result<String>,
        len: &dyn Fn(&mut BufReader<File>) -> Result<u64>,
        depth: usize,
        file_len: u64,
    ) -> Result<()> {
        let fixed = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                skip_string(r)?;
                return Ok(());
            }
            9 if depth < 4 => {
                let inner = read_u32(r)?;
                let n = len(r)?;
                // Every value takes at least one byte: a longer array is a corrupt count.
                if n > file_len {
                    bail!("metadata array of {n} values is longer than the file");
                }
                for _ in 0..n {
                    skip_value(r, inner, skip_string, len, depth + 1, file_len)?;
                }
                return Ok(());
            }
            _ => bail!("unknown metadata value type {ty}"),
        };
        // Seeking past the end succeeds: check, or a corrupt count loops for a very long time.
        if r.seek(SeekFrom::Current(fixed))? > file_len {
            bail!("metadata runs past the end of the file");
        }
        Ok(())
    }
    for _ in 0..n_kv {
        skip_string(&mut r)?;
        let ty = read_u32(&mut r)?;
        skip_value(&mut r, ty, &skip_string, &len, 0, file_len)?;
    }
    for _ in 0..n_tensors {
        let name = skip_string(&mut r)?;
        let n_dims = read_u32(&mut r)?;
        if n_dims > 8 {
            bail!("too many dimensions");
        }
        for _ in 0..n_dims {
            len(&mut r)?;
        }
        let ty = read_u32(&mut r)?;
        read_u64(&mut r)?;
        let known = matches!(ty, 0..=3 | 6..=15 | 30);
        if !known {
            return Ok(Some((name, ty)));
        }
    }
    Ok(None)
}

fn read_u32(r: &mut impl Read) -> Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}
