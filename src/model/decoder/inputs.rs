//! What a full-sequence forward takes: token ids, the padding mask and the images.

use candle_core::Tensor;

use crate::model::vlm::ImageBatch;

/// Token ids `(B, T)`, the padding mask `(B, T)` (1 for real tokens; `None`: all real) and
/// the images of the image tokens, in the order their runs appear (row by row).
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub ids: &'a Tensor,
    pub mask: Option<&'a Tensor>,
    pub images: Option<&'a ImageBatch>,
}

impl<'a> Inputs<'a> {
    /// Text only.
    pub fn text(ids: &'a Tensor, mask: Option<&'a Tensor>) -> Self {
        Self {
            ids,
            mask,
            images: None,
        }
    }

    /// The same inputs with `images` for their image tokens.
    pub fn with_images(self, images: Option<&'a ImageBatch>) -> Self {
        Self { images, ..self }
    }
}
