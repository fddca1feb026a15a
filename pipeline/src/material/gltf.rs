//! A glTF 2.0 file that shows a material on a unit quad.

use super::MaterialError;
use gltf::json::{
    self, Index,
    accessor::{ComponentType, GenericComponentType, Type},
    buffer::Target,
    material::{NormalTexture, OcclusionTexture, PbrMetallicRoughness, StrengthFactor},
    mesh::{Mode, Primitive, Semantic},
    texture::{Info, MagFilter, MinFilter, Sampler, WrappingMode},
    validation::Checked::Valid,
};

/// Relative URIs (percent-encoded where needed) of a material's PNG files, next to the `.gltf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterialFiles {
    /// The base colour (sRGB).
    pub albedo: String,
    /// The tangent-space normal map, if any.
    pub normal: Option<String>,
    /// Occlusion (R), roughness (G) and metalness (B) in one texture, if any.
    pub orm: Option<String>,
}

/// The quad's corners: position in the XY plane (facing +Z) and texcoord, glTF's UV origin
/// being the image's top-left corner.
const CORNERS: [([f32; 3], [f32; 2]); 4] = [
    ([-0.5, -0.5, 0.0], [0.0, 1.0]),
    ([0.5, -0.5, 0.0], [1.0, 1.0]),
    ([0.5, 0.5, 0.0], [1.0, 0.0]),
    ([-0.5, 0.5, 0.0], [0.0, 0.0]),
];
/// Two counter-clockwise triangles.
const INDICES: [u16; 6] = [0, 1, 2, 0, 2, 3];
/// Every corner's normal.
const NORMAL: [f32; 3] = [0.0, 0.0, 1.0];
/// Every corner's tangent: +U is +X, and the bitangent (+Z × +X = +Y) points to −V.
const TANGENT: [f32; 4] = [1.0, 0.0, 0.0, 1.0];

/// A `.gltf` (JSON) document: one scene, one node, one mesh, a unit quad facing +Z with
/// POSITION, NORMAL, TEXCOORD_0 (scaled by `tiling`, sampled with REPEAT so the texture
/// repeats `tiling` times across the quad) and, with a normal map, TANGENT, in an embedded
/// base64 buffer; and a dielectric metallic-roughness material named `name` that uses
/// `files`: the albedo as base colour, the normal map, and the ORM texture as both
/// metallic-roughness and occlusion.
///
/// Fails when `tiling` is not a positive finite number.
pub fn quad_gltf(name: &str, files: &MaterialFiles, tiling: f32) -> Result<Vec<u8>, MaterialError> {
    if !(tiling.is_finite() && tiling > 0.0) {
        return Err(MaterialError::InvalidTiling(tiling));
    }
    let mut doc = Document::default();
    let corners = CORNERS.len();
    let mut attribute = |values: Vec<f32>, type_| {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        doc.accessor(
            &bytes,
            corners,
            type_,
            ComponentType::F32,
            Target::ArrayBuffer,
        )
    };
    let position = attribute(CORNERS.iter().flat_map(|(p, _)| *p).collect(), Type::Vec3);
    let uvs = CORNERS.iter().flat_map(|(_, uv)| uv.map(|c| c * tiling));
    let mut attributes = vec![
        (Semantic::Positions, position),
        (
            Semantic::Normals,
            attribute(NORMAL.repeat(corners), Type::Vec3),
        ),
        (Semantic::TexCoords(0), attribute(uvs.collect(), Type::Vec2)),
    ];
    // Tangents only serve a normal map (the validator flags unused ones).
    if files.normal.is_some() {
        let tangents = attribute(TANGENT.repeat(corners), Type::Vec4);
        attributes.push((Semantic::Tangents, tangents));
    }
    let (min, max) = CORNERS
        .iter()
        .fold(([f32::MAX; 3], [f32::MIN; 3]), |(lo, hi), (p, _)| {
            (
                std::array::from_fn(|i| lo[i].min(p[i])),
                std::array::from_fn(|i| hi[i].max(p[i])),
            )
        });
    let accessor = &mut doc.root.accessors[position.value()];
    accessor.min = Some(json::Value::from(min.to_vec()));
    accessor.max = Some(json::Value::from(max.to_vec()));
    let bytes: Vec<u8> = INDICES.iter().flat_map(|i| i.to_le_bytes()).collect();
    let indices = doc.accessor(
        &bytes,
        INDICES.len(),
        Type::Scalar,
        ComponentType::U16,
        Target::ElementArrayBuffer,
    );

    let sampler = doc.root.push(Sampler {
        mag_filter: Some(Valid(MagFilter::Linear)),
        min_filter: Some(Valid(MinFilter::LinearMipmapLinear)),
        wrap_s: Valid(WrappingMode::Repeat),
        wrap_t: Valid(WrappingMode::Repeat),
        ..Default::default()
    });
    let mut texture = |uri: &str| {
        let source = doc.root.push(json::Image {
            buffer_view: None,
            mime_type: Some(json::image::MimeType("image/png".into())),
            name: None,
            uri: Some(uri.into()),
            extensions: None,
            extras: Default::default(),
        });
        doc.root.push(json::Texture {
            name: None,
            sampler: Some(sampler),
            source,
            extensions: None,
            extras: Default::default(),
        })
    };
    let info = |index| Info {
        index,
        tex_coord: 0,
        extensions: None,
        extras: Default::default(),
    };
    let albedo = texture(&files.albedo);
    let normal = files.normal.as_deref().map(&mut texture);
    let orm = files.orm.as_deref().map(&mut texture);
    let material = doc.root.push(json::Material {
        name: Some(name.into()),
        pbr_metallic_roughness: PbrMetallicRoughness {
            base_color_texture: Some(info(albedo)),
            metallic_factor: StrengthFactor(0.0),
            roughness_factor: StrengthFactor(1.0),
            metallic_roughness_texture: orm.map(info),
            ..Default::default()
        },
        normal_texture: normal.map(|index| NormalTexture {
            index,
            scale: 1.0,
            tex_coord: 0,
            extensions: None,
            extras: Default::default(),
        }),
        occlusion_texture: orm.map(|index| OcclusionTexture {
            index,
            strength: StrengthFactor(1.0),
            tex_coord: 0,
            extensions: None,
            extras: Default::default(),
        }),
        ..Default::default()
    });
    let mesh = doc.root.push(json::Mesh {
        extensions: None,
        extras: Default::default(),
        name: Some(name.into()),
        primitives: vec![Primitive {
            attributes: attributes.into_iter().map(|(s, a)| (Valid(s), a)).collect(),
            extensions: None,
            extras: Default::default(),
            indices: Some(indices),
            material: Some(material),
            mode: Valid(Mode::Triangles),
            targets: None,
        }],
        weights: None,
    });
    let node = doc.root.push(json::Node {
        mesh: Some(mesh),
        name: Some(name.into()),
        ..Default::default()
    });
    let scene = doc.root.push(json::Scene {
        extensions: None,
        extras: Default::default(),
        name: Some(name.into()),
        nodes: vec![node],
    });
    doc.root.scene = Some(scene);
    Ok(serde_json::to_vec_pretty(&doc.finish())?)
}

/// A glTF root under construction and the bytes of its single buffer.
struct Document {
    root: json::Root,
    bin: Vec<u8>,
}

impl Default for Document {
    fn default() -> Self {
        let asset = json::Asset {
            generator: Some("Autonomy".into()),
            ..Default::default()
        };
        Self {
            root: json::Root {
                asset,
                ..Default::default()
            },
            bin: Vec::new(),
        }
    }
}

impl Document {
    /// Appends `bytes` (`count` elements) to the buffer in a view for `target` and returns an
    /// accessor over them.
    fn accessor(
        &mut self,
        bytes: &[u8],
        count: usize,
        type_: Type,
        component: ComponentType,
        target: Target,
    ) -> Index<json::Accessor> {
        let view = self.root.push(json::buffer::View {
            buffer: Index::new(0), // the only buffer, pushed by `finish`
            byte_length: bytes.len().into(),
            byte_offset: Some(self.bin.len().into()),
            byte_stride: None,
            name: None,
            target: Some(Valid(target)),
            extensions: None,
            extras: Default::default(),
        });
        self.bin.extend_from_slice(bytes);
        self.root.push(json::Accessor {
            buffer_view: Some(view),
            byte_offset: None,
            count: count.into(),
            component_type: Valid(GenericComponentType(component)),
            extensions: None,
            extras: Default::default(),
            type_: Valid(type_),
            min: None,
            max: None,
            name: None,
            normalized: false,
            sparse: None,
        })
    }

    /// The root with the buffer embedded as a base64 data URI.
    fn finish(mut self) -> json::Root {
        self.root.push(json::Buffer {
            byte_length: self.bin.len().into(),
            name: None,
            uri: Some(format!(
                "data:application/octet-stream;base64,{}",
                base64(&self.bin)
            )),
            extensions: None,
            extras: Default::default(),
        });
        self.root
    }
}

/// Standard base64 (RFC 4648, with padding).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[sextet as usize])
            } else {
                '='
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xfe]), "+//+");
    }

    #[test]
    fn rejects_a_tiling_that_is_not_positive() {
        let files = MaterialFiles {
            albedo: "a.png".into(),
            normal: None,
            orm: None,
        };
        for tiling in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                quad_gltf("a", &files, tiling),
                Err(MaterialError::InvalidTiling(_))
            ));
        }
    }
}
