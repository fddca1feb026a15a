//! Provenance manifests: what made an asset, written beside it (`<asset>.prov.json`) and
//! embedded in its PNGs (an `iTXt` chunk keyed [`PNG_KEYWORD`], just before `IEND`) and GIFs
//! (an Application Extension named [`GIF_APPLICATION`], just before the trailer).
//!
//! A file's recorded `sha256` and CID are of its *content*: the bytes as written before the
//! manifest (and the C2PA Content Credentials after it, see [`crate::credentials`]) were
//! embedded. [`strip_png`] and [`strip_gif`] recover them, so a verifier recomputes the hash
//! from the file alone; a changed pixel or an edited manifest no longer matches.
//!
//! [`sign`] makes the creator's EIP-191 signature over [`manifest_hash`]; [`recover_signer`]
//! gives back the address that signed.

use alloy_primitives::Address;
use alloy_signer::{Signature, SignerSync};
use alloy_signer_local::PrivateKeySigner;
use cid::Cid;
use cid::multihash::Multihash;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::generator::ModelIdentity;

/// Version tag of the manifest format.
pub const SCHEMA: &str = "autonomy.provenance/1";

/// The PNG `iTXt` keyword that holds the embedded manifest.
pub const PNG_KEYWORD: &str = "autonomy:provenance";

/// The GIF Application Extension that holds the embedded manifest: its identifier (8 bytes)
/// and authentication code (3 bytes).
pub const GIF_APPLICATION: &[u8; 11] = b"AUTONOMYPV1";

/// Multicodec code of raw bytes (CIDv1 `raw`).
const RAW_CODEC: u64 = 0x55;
/// Multihash code of sha2-256.
const SHA2_256: u64 = 0x12;

/// How an asset came to be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version, [`SCHEMA`].
    pub schema: String,
    /// Asset name (from the recipe).
    pub asset: String,
    /// Every file the asset consists of.
    pub outputs: Vec<FileHash>,
    /// The canonical recipe (every default filled in).
    pub recipe: serde_json::Value,
    /// The recipe file, relative to the recipe root (`fx/fire.recipe.toml`): with the
    /// manifest's folder it locates the root, so the asset can be made again.
    pub recipe_file: String,
    /// The model that generated it.
    pub model: ModelIdentity,
    /// Where the model ran ([`crate::device::name`]: `cpu (x86-64-v4, caches …)`, `cuda:0`).
    pub device: String,
    /// Images it was made from (img2img sources).
    pub parents: Vec<Parent>,
    /// Ethereum address of the creator, once the asset is signed.
    pub creator: Option<String>,
    /// When it was generated (UTC, RFC 3339).
    pub created: String,
    /// The creator's EIP-191 signature over the manifest's canonical hash, once signed.
    pub signature: Option<String>,
}

/// One file and the hashes of its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    /// File name, relative to the manifest's folder.
    pub file: String,
    /// sha256 (hex) of the content.
    pub sha256: String,
    /// CIDv1 (raw codec, sha2-256, base32) of the content.
    pub cid: String,
}

impl FileHash {
    /// Hashes `content` under the name `file`.
    pub fn of(file: &str, content: &[u8]) -> Self {
        let digest = Sha256::digest(content);
        Self {
            file: file.to_string(),
            sha256: hex::encode(digest),
            cid: cid_of_digest(&digest),
        }
    }
}

/// An input an asset was derived from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    /// `file:<path>` (relative to the recipe root) or `recipe:<asset>`.
    pub reference: String,
    /// sha256 (hex) of the parent image's content.
    pub sha256: String,
    /// CIDv1 of the parent image's content.
    pub cid: String,
    /// What it was used for (`source`, `mask`).
    pub role: String,
}

/// A provenance problem.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    /// The bytes are not a PNG this module can walk.
    #[error("not a valid PNG: {0}")]
    Png(String),
    /// The bytes are not a GIF this module can walk.
    #[error("not a valid GIF: {0}")]
    Gif(String),
    /// The manifest does not serialise or parse.
    #[error("manifest JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The signature could not be made, parsed or recovered.
    #[error("signature: {0}")]
    Signature(String),
}

impl Manifest {
    /// The manifest as pretty JSON, as the sidecar file holds it.
    pub fn to_json(&self) -> Result<Vec<u8>, ProvenanceError> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// The RFC 8785 canonical form of the manifest without its signature: what is signed.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, ProvenanceError> {
        let unsigned = Manifest {
            signature: None,
            ..self.clone()
        };
        Ok(serde_jcs::to_vec(&unsigned)?)
    }
}

/// sha256 of [`Manifest::signing_bytes`]: the hash the creator signs.
pub fn manifest_hash(manifest: &Manifest) -> Result<[u8; 32], ProvenanceError> {
    Ok(Sha256::digest(manifest.signing_bytes()?).into())
}

/// Signs `manifest`: sets `creator` to the signer's checksummed address (it is part of what is
/// signed), then `signature` to the 0x-hex EIP-191 signature over [`manifest_hash`]. On an
/// error the manifest is left unchanged.
pub fn sign(manifest: &mut Manifest, signer: &PrivateKeySigner) -> Result<(), ProvenanceError> {
    let creator = Some(signer.address().to_checksum(None));
    let hash = manifest_hash(&Manifest {
        creator: creator.clone(),
        ..manifest.clone()
    })?;
    let signature = signer
        .sign_message_sync(&hash)
        .map_err(|e| ProvenanceError::Signature(e.to_string()))?;
    manifest.creator = creator;
    manifest.signature = Some(signature.to_string());
    Ok(())
}

/// The address whose signature the manifest carries (`None` when unsigned). It equals
/// `creator` only when the manifest is unchanged since signing; a malformed signature is an
/// error.
pub fn recover_signer(manifest: &Manifest) -> Result<Option<Address>, ProvenanceError> {
    let Some(signature) = &manifest.signature else {
        return Ok(None);
    };
    let bad = |e: alloy_primitives::SignatureError| ProvenanceError::Signature(e.to_string());
    let signature: Signature = signature.parse().map_err(bad)?;
    signature
        .recover_address_from_msg(manifest_hash(manifest)?)
        .map(Some)
        .map_err(bad)
}

/// The CIDv1 string (raw, sha2-256, base32) of content with this sha256 digest.
pub fn cid_of_digest(digest: &[u8]) -> String {
    match Multihash::<64>::wrap(SHA2_256, digest) {
        Ok(hash) => Cid::new_v1(RAW_CODEC, hash).to_string(),
        // A 32-byte digest always fits the 64-byte multihash.
        Err(_) => String::new(),
    }
}

/// Inserts `manifest` into `png` as an `iTXt` chunk just before `IEND`.
pub fn embed_png(png: &[u8], manifest: &[u8]) -> Result<Vec<u8>, ProvenanceError> {
    let end = chunks(png)?
        .into_iter()
        .find(|c| &c.kind == b"IEND")
        .ok_or_else(|| ProvenanceError::Png("no IEND chunk".into()))?;
    let mut data = Vec::with_capacity(PNG_KEYWORD.len() + 5 + manifest.len());
    data.extend_from_slice(PNG_KEYWORD.as_bytes());
    // Null separator, no compression, method 0, empty language tag, empty translated keyword.
    data.extend_from_slice(&[0, 0, 0, 0, 0]);
    data.extend_from_slice(manifest);
    let mut out = Vec::with_capacity(png.len() + data.len() + 12);
    out.extend_from_slice(&png[..end.start]);
    out.extend_from_slice(&chunk(b"iTXt", &data)?);
    out.extend_from_slice(&png[end.start..]);
    Ok(out)
}

/// Splits a PNG into its content — without our manifest chunk and any C2PA manifest store
/// (`caBX` chunks) — and the embedded manifest, if any.
pub fn strip_png(png: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), ProvenanceError> {
    let mut content = png[..PNG_SIGNATURE.len().min(png.len())].to_vec();
    let mut manifest = None;
    for c in chunks(png)? {
        if c.kind == PNG_C2PA_CHUNK {
            continue;
        }
        let data = &png[c.start + 8..c.end - 4];
        let ours = &c.kind == b"iTXt"
            && data.starts_with(PNG_KEYWORD.as_bytes())
            && data.get(PNG_KEYWORD.len()) == Some(&0);
        match ours {
            true if manifest.is_none() => {
                manifest = data.get(PNG_KEYWORD.len() + 5..).map(<[u8]>::to_vec);
            }
            _ => content.extend_from_slice(&png[c.start..c.end]),
        }
    }
    Ok((content, manifest))
}

/// Removes the C2PA manifest store (`caBX` chunks) from a PNG; says whether there was one.
pub fn remove_png_credentials(png: &[u8]) -> Result<(Vec<u8>, bool), ProvenanceError> {
    let mut out = png[..PNG_SIGNATURE.len().min(png.len())].to_vec();
    let mut found = false;
    let mut end = out.len();
    for c in chunks(png)? {
        match c.kind == PNG_C2PA_CHUNK {
            true => found = true,
            false => out.extend_from_slice(&png[c.start..c.end]),
        }
        end = c.end;
    }
    // Whatever follows IEND stays, so that appended bytes remain visible to the caller.
    out.extend_from_slice(&png[end..]);
    Ok((out, found))
}

/// A file format that carries an embedded manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// PNG: an `iTXt` chunk ([`embed_png`]).
    Png,
    /// GIF: an Application Extension ([`embed_gif`]).
    Gif,
}

impl Carrier {
    /// The carrier a file is, by its name's extension; `None` for files without a manifest.
    pub fn of(file: &str) -> Option<Self> {
        if file.ends_with(".png") {
            Some(Self::Png)
        } else if file.ends_with(".gif") {
            Some(Self::Gif)
        } else {
            None
        }
    }

    /// Embeds `manifest` in `bytes` ([`embed_png`] or [`embed_gif`]).
    pub fn embed(self, bytes: &[u8], manifest: &[u8]) -> Result<Vec<u8>, ProvenanceError> {
        match self {
            Self::Png => embed_png(bytes, manifest),
            Self::Gif => embed_gif(bytes, manifest),
        }
    }

    /// The file's media type, as C2PA names formats.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Gif => "image/gif",
        }
    }

    /// Removes the C2PA manifest store from `bytes`, leaving everything else as it was; says
    /// whether there was one.
    pub fn remove_credentials(self, bytes: &[u8]) -> Result<(Vec<u8>, bool), ProvenanceError> {
        match self {
            Self::Png => remove_png_credentials(bytes),
            Self::Gif => remove_gif_credentials(bytes),
        }
    }

    /// Splits `bytes` into content and embedded manifest ([`strip_png`] or [`strip_gif`]).
    pub fn strip(self, bytes: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), ProvenanceError> {
        match self {
            Self::Png => strip_png(bytes),
            Self::Gif => strip_gif(bytes),
        }
    }
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
/// The chunk type C2PA stores its manifest store (JUMBF) in.
const PNG_C2PA_CHUNK: [u8; 4] = *b"caBX";
/// The GIF Application Extension (identifier + authentication code) C2PA stores its manifest
/// store in.
const GIF_C2PA_APPLICATION: &[u8; 11] = b"C2PA_GIF\x01\x00\x00";

/// Where a chunk sits in the file: `start` at its length field, `end` after its CRC.
struct Chunk {
    kind: [u8; 4],
    start: usize,
    end: usize,
}

fn chunks(png: &[u8]) -> Result<Vec<Chunk>, ProvenanceError> {
    if !png.starts_with(&PNG_SIGNATURE) {
        return Err(ProvenanceError::Png("missing PNG signature".into()));
    }
    let mut out = Vec::new();
    let mut at = PNG_SIGNATURE.len();
    while at < png.len() {
        let header = png
            .get(at..at + 8)
            .ok_or_else(|| ProvenanceError::Png(format!("truncated chunk header at byte {at}")))?;
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = [header[4], header[5], header[6], header[7]];
        let end = at
            .checked_add(12)
            .and_then(|n| n.checked_add(length))
            .filter(|&end| end <= png.len())
            .ok_or_else(|| ProvenanceError::Png(format!("chunk at byte {at} runs past the end")))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&png[at + 4..end - 4]);
        if crc.finalize().to_be_bytes() != png[end - 4..end] {
            let name = String::from_utf8_lossy(&kind);
            let message = format!("chunk `{name}` at byte {at} fails its CRC: bytes changed");
            return Err(ProvenanceError::Png(message));
        }
        out.push(Chunk {
            kind,
            start: at,
            end,
        });
        at = end;
        if &kind == b"IEND" {
            break;
        }
    }
    Ok(out)
}

fn chunk(kind: &[u8; 4], data: &[u8]) -> Result<Vec<u8>, ProvenanceError> {
    let length = u32::try_from(data.len())
        .map_err(|_| ProvenanceError::Png("manifest too large for a PNG chunk".into()))?;
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    Ok(out)
}

/// Inserts `manifest` into `gif` as an Application Extension ([`GIF_APPLICATION`], data in
/// sub-blocks of at most 255 bytes) just before the trailer.
pub fn embed_gif(gif: &[u8], manifest: &[u8]) -> Result<Vec<u8>, ProvenanceError> {
    let trailer = walk_gif(gif)?.trailer;
    let mut out = Vec::with_capacity(gif.len() + manifest.len() + manifest.len() / 255 + 16);
    out.extend_from_slice(&gif[..trailer]);
    out.extend_from_slice(&[GIF_EXTENSION, GIF_APPLICATION_LABEL, 11]);
    out.extend_from_slice(GIF_APPLICATION);
    for piece in manifest.chunks(255) {
        out.push(piece.len() as u8);
        out.extend_from_slice(piece);
    }
    out.push(0);
    out.extend_from_slice(&gif[trailer..]);
    Ok(out)
}

/// Splits a GIF into its content — without our manifest extension (the first one, wherever it
/// is) and any C2PA manifest store extension — and the embedded manifest, if any. Bytes after
/// the trailer stay in the content.
pub fn strip_gif(gif: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), ProvenanceError> {
    let layout = walk_gif(gif)?;
    let mut cut = layout.credentials.clone();
    let manifest = layout.ours.map(|(span, manifest)| {
        cut.push(span);
        manifest
    });
    Ok((without(gif, cut), manifest))
}

/// Removes the C2PA manifest store extension from a GIF; says whether there was one.
pub fn remove_gif_credentials(gif: &[u8]) -> Result<(Vec<u8>, bool), ProvenanceError> {
    let cut = walk_gif(gif)?.credentials;
    let found = !cut.is_empty();
    Ok((without(gif, cut), found))
}

/// `bytes` without the given (non-overlapping) ranges.
fn without(bytes: &[u8], mut cut: Vec<std::ops::Range<usize>>) -> Vec<u8> {
    cut.sort_by_key(|r| r.start);
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for range in cut {
        out.extend_from_slice(&bytes[at..range.start]);
        at = range.end;
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

const GIF_EXTENSION: u8 = 0x21;
const GIF_APPLICATION_LABEL: u8 = 0xFF;
const GIF_IMAGE: u8 = 0x2C;
const GIF_TRAILER: u8 = 0x3B;

/// What [`walk_gif`] found.
struct GifLayout {
    /// Where the trailer byte is.
    trailer: usize,
    /// Our first manifest extension: where it is and its data.
    ours: Option<(std::ops::Range<usize>, Vec<u8>)>,
    /// Where the C2PA manifest store extensions are.
    credentials: Vec<std::ops::Range<usize>>,
}

/// Walks a GIF's blocks from the header to the trailer.
fn walk_gif(gif: &[u8]) -> Result<GifLayout, ProvenanceError> {
    let mut r = GifReader { gif, at: 0 };
    if !matches!(r.take(6, "header")?, b"GIF87a" | b"GIF89a") {
        return Err(ProvenanceError::Gif("missing GIF signature".into()));
    }
    let screen = r.take(7, "logical screen descriptor")?;
    r.colour_table(screen[4])?;
    let mut ours = None;
    let mut credentials = Vec::new();
    loop {
        let start = r.at;
        match r.byte("block")? {
            GIF_TRAILER => {
                return Ok(GifLayout {
                    trailer: start,
                    ours,
                    credentials,
                });
            }
            GIF_IMAGE => {
                let descriptor = r.take(9, "image descriptor")?;
                r.colour_table(descriptor[8])?;
                r.byte("LZW minimum code size")?;
                r.sub_blocks(false)?;
            }
            GIF_EXTENSION => {
                let label = r.byte("extension label")?;
                let application = |id: &[u8; 11]| {
                    label == GIF_APPLICATION_LABEL
                        && gif.get(r.at) == Some(&11)
                        && gif.get(r.at + 1..r.at + 12) == Some(&id[..])
                };
                let mine = ours.is_none() && application(GIF_APPLICATION);
                let c2pa = application(GIF_C2PA_APPLICATION);
                let data = r.sub_blocks(mine)?;
                if mine {
                    ours = Some((start..r.at, data[GIF_APPLICATION.len()..].to_vec()));
                } else if c2pa {
                    credentials.push(start..r.at);
                }
            }
            other => {
                let message = format!("unknown block 0x{other:02x} at byte {start}");
                return Err(ProvenanceError::Gif(message));
            }
        }
    }
}

/// A cursor over a GIF that never reads past its end.
struct GifReader<'a> {
    gif: &'a [u8],
    at: usize,
}

impl<'a> GifReader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ProvenanceError> {
        let bytes = self
            .at
            .checked_add(n)
            .and_then(|end| self.gif.get(self.at..end))
            .ok_or_else(|| {
                ProvenanceError::Gif(format!("{what} at byte {} is cut off", self.at))
            })?;
        self.at += n;
        Ok(bytes)
    }

    fn byte(&mut self, what: &str) -> Result<u8, ProvenanceError> {
        Ok(self.take(1, what)?[0])
    }

    /// Skips the colour table a descriptor's packed byte announces.
    fn colour_table(&mut self, packed: u8) -> Result<(), ProvenanceError> {
        if packed & 0x80 != 0 {
            self.take(3 << ((packed & 0x07) + 1), "colour table")?;
        }
        Ok(())
    }

    /// Reads data sub-blocks up to their terminator; returns their data joined when `keep`.
    fn sub_blocks(&mut self, keep: bool) -> Result<Vec<u8>, ProvenanceError> {
        let mut data = Vec::new();
        loop {
            let size = self.byte("sub-block size")?;
            if size == 0 {
                return Ok(data);
            }
            let piece = self.take(usize::from(size), "sub-block")?;
            if keep {
                data.extend_from_slice(piece);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn png() -> Vec<u8> {
        let image = image::RgbaImage::from_pixel(3, 2, image::Rgba([10, 20, 30, 255]));
        let mut bytes = Vec::new();
        image
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes
    }

    #[test]
    fn embedded_manifest_round_trips_and_stripping_restores_the_content() {
        let original = png();
        let embedded = embed_png(&original, br#"{"asset":"x"}"#).unwrap();
        assert_ne!(embedded, original);
        let decoded = image::load_from_memory(&embedded).unwrap().to_rgba8();
        assert_eq!(decoded.get_pixel(2, 1).0, [10, 20, 30, 255]);
        let (content, manifest) = strip_png(&embedded).unwrap();
        assert_eq!(content, original);
        assert_eq!(manifest.as_deref(), Some(&br#"{"asset":"x"}"#[..]));
        assert_eq!(strip_png(&original).unwrap(), (original, None));
    }

    /// A two-frame GIF with a global and a local colour table, a loop extension and a comment.
    fn gif() -> Vec<u8> {
        let mut encoder = gif::Encoder::new(Vec::new(), 3, 2, &[0, 0, 0, 255, 255, 255]).unwrap();
        encoder.set_repeat(gif::Repeat::Infinite).unwrap();
        encoder
            .write_raw_extension(gif::Extension::Comment.into(), &[b"made by hand"])
            .unwrap();
        encoder
            .write_frame(&gif::Frame {
                width: 3,
                height: 2,
                buffer: vec![0, 1, 0, 1, 0, 1].into(),
                ..Default::default()
            })
            .unwrap();
        encoder
            .write_frame(&gif::Frame {
                width: 3,
                height: 2,
                delay: 8,
                palette: Some(vec![10, 20, 30, 40, 50, 60]),
                buffer: vec![1, 1, 0, 0, 1, 1].into(),
                ..Default::default()
            })
            .unwrap();
        encoder.into_inner().unwrap()
    }

    fn gif_frames(bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut options = gif::DecodeOptions::new();
        options.set_color_output(gif::ColorOutput::RGBA);
        let mut decoder = options.read_info(bytes).unwrap();
        let mut frames = Vec::new();
        while let Some(frame) = decoder.read_next_frame().unwrap() {
            frames.push((frame.delay, frame.buffer.to_vec()));
        }
        frames
    }

    #[test]
    fn gif_manifest_round_trips_and_decoders_still_read_every_frame() {
        let original = gif();
        // Longer than one sub-block, and exactly a multiple of one.
        for manifest in [
            br#"{"asset":"x"}"#.to_vec(),
            vec![b'a'; 600],
            vec![b'b'; 510],
        ] {
            let embedded = embed_gif(&original, &manifest).unwrap();
            assert_eq!(gif_frames(&embedded), gif_frames(&original));
            assert_eq!(gif_frames(&embedded).len(), 2);
            assert_eq!(embedded.last(), Some(&GIF_TRAILER));
            let (content, found) = strip_gif(&embedded).unwrap();
            assert_eq!(content, original);
            assert_eq!(found, Some(manifest));
        }
        assert_eq!(strip_gif(&original).unwrap(), (original.clone(), None));
        // Only the first of two is ours; the second stays in the content.
        let twice = embed_gif(&embed_gif(&original, b"1").unwrap(), b"2").unwrap();
        let (content, found) = strip_gif(&twice).unwrap();
        assert_eq!(found.as_deref(), Some(&b"1"[..]));
        assert_eq!(content, embed_gif(&original, b"2").unwrap());
        assert_eq!(Carrier::of("fire.gif"), Some(Carrier::Gif));
        assert_eq!(Carrier::of("fire.sheet.png"), Some(Carrier::Png));
        assert_eq!(Carrier::of("fire.atlas.json"), None);
    }

    #[test]
    fn malformed_gifs_are_errors() {
        let embedded = embed_gif(&gif(), b"{}").unwrap();
        for end in 0..embedded.len() {
            let cut = &embedded[..end];
            assert!(strip_gif(cut).is_err(), "cut at {end}");
            assert!(embed_gif(cut, b"{}").is_err(), "cut at {end}");
        }
        let mut unknown = embedded.clone();
        let at = embedded.len() - 1;
        unknown[at] = 0x00;
        assert!(matches!(strip_gif(&unknown), Err(ProvenanceError::Gif(_))));
        assert!(strip_gif(b"GIF90a\0\0\0\0\0\0\0;").is_err());
    }

    #[test]
    fn cid_is_the_known_raw_sha256_cid() {
        // `ipfs add --cid-version 1 --raw-leaves` of the bytes "hello\n".
        let file = FileHash::of("hello.txt", b"hello\n");
        assert_eq!(
            file.cid,
            "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
        );
        assert_eq!(
            file.sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }

    fn manifest() -> Manifest {
        Manifest {
            schema: SCHEMA.into(),
            asset: "potion".into(),
            outputs: vec![FileHash::of("potion.png", b"x")],
            recipe: serde_json::json!({"prompt": "p", "kind": "sprite"}),
            recipe_file: "potion.recipe.toml".into(),
            model: ModelIdentity {
                name: "house".into(),
                weights_sha256: "ab".into(),
                dataset_sha256: None,
                path: "models/house".into(),
                generator: "g".into(),
                loras: Vec::new(),
                embeddings: Vec::new(),
                hypernetworks: Vec::new(),
                vae: None,
                refiner: None,
                upscaler: None,
                controlnets: Vec::new(),
            },
            device: "cpu".into(),
            parents: vec![],
            creator: None,
            created: "2026-11-25T00:00:00Z".into(),
            signature: None,
        }
    }

    #[test]
    fn signing_bytes_ignore_the_signature_and_are_canonical() {
        let manifest = manifest();
        let signed = Manifest {
            signature: Some("0x12".into()),
            ..manifest.clone()
        };
        assert_eq!(
            manifest.signing_bytes().unwrap(),
            signed.signing_bytes().unwrap()
        );
        let text = String::from_utf8(manifest.signing_bytes().unwrap()).unwrap();
        assert!(
            text.contains(r#""recipe":{"kind":"sprite","prompt":"p"}"#),
            "{text}"
        );
    }

    #[test]
    fn signatures_recover_the_creator_and_break_on_any_change() {
        let signer = PrivateKeySigner::random();
        let mut signed = manifest();
        assert_eq!(recover_signer(&signed).unwrap(), None);
        sign(&mut signed, &signer).unwrap();
        let creator = signer.address().to_checksum(None);
        assert_eq!(signed.creator.as_deref(), Some(creator.as_str()));
        assert_eq!(recover_signer(&signed).unwrap(), Some(signer.address()));

        let edits: [fn(&mut Manifest); 4] = [
            |m| m.recipe["prompt"] = "q".into(),
            |m| m.outputs[0].sha256.replace_range(..1, "f"),
            |m| m.creator = Some(Address::repeat_byte(7).to_checksum(None)),
            |m| m.asset.push('2'),
        ];
        for edit in edits {
            let mut edited = signed.clone();
            edit(&mut edited);
            assert_ne!(
                manifest_hash(&edited).unwrap(),
                manifest_hash(&signed).unwrap()
            );
            match recover_signer(&edited) {
                Ok(recovered) => assert_ne!(recovered, Some(signer.address())),
                Err(e) => assert!(matches!(e, ProvenanceError::Signature(_))),
            }
        }

        let mut other = manifest();
        other.asset = "sword".into();
        sign(&mut other, &signer).unwrap();
        let swapped = Manifest {
            signature: other.signature,
            ..signed.clone()
        };
        assert_ne!(recover_signer(&swapped).unwrap(), Some(signer.address()));
        for garbage in ["0x12", "nonsense", ""] {
            let broken = Manifest {
                signature: Some(garbage.into()),
                ..signed.clone()
            };
            assert!(recover_signer(&broken).is_err(), "{garbage}");
        }
    }

    proptest! {
        #[test]
        fn any_changed_byte_of_a_png_is_noticed(
            flip in any::<prop::sample::Index>(),
            mask in 1u8..,
        ) {
            let original = png();
            let embedded = embed_png(&original, br#"{"asset":"x"}"#).unwrap();
            let mut changed = embedded.clone();
            changed[flip.index(embedded.len())] ^= mask;
            let stripped = strip_png(&changed);
            prop_assert!(
                stripped.is_err() || stripped.unwrap() != (original, Some(br#"{"asset":"x"}"#.to_vec())),
                "a changed byte went unnoticed"
            );
        }

        #[test]
        fn walking_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut png = PNG_SIGNATURE.to_vec();
            png.extend(bytes);
            let _ = strip_png(&png);
            let _ = embed_png(&png, b"{}");
        }

        #[test]
        fn walking_arbitrary_gifs_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            flip in any::<prop::sample::Index>(),
            mask in any::<u8>(),
        ) {
            let mut raw = b"GIF89a".to_vec();
            raw.extend(&bytes);
            let _ = strip_gif(&raw);
            let _ = embed_gif(&raw, b"{}");
            let mut real = embed_gif(&gif(), &bytes).unwrap();
            let at = flip.index(real.len());
            real[at] ^= mask;
            let _ = strip_gif(&real);
            let _ = embed_gif(&real, b"{}");
        }

        #[test]
        fn any_manifest_round_trips_through_a_gif(manifest in proptest::collection::vec(any::<u8>(), 0..1000)) {
            let original = gif();
            let (content, found) = strip_gif(&embed_gif(&original, &manifest).unwrap()).unwrap();
            prop_assert_eq!(content, original);
            prop_assert_eq!(found, Some(manifest));
        }
    }
}
