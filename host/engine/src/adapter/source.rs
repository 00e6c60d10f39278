//! The base's weights with an adapter on top, as a [`WeightSource`]: each adapted matrix
//! wrapped in its low-rank side path, the embedding and head grown by the added tokens' rows.
//! The base source is asked for the base's own shapes, so it checks them as it always does.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::Linear;

use super::Adapter;
use crate::model::{Matrix, Weight, WeightSource};

/// A [`WeightSource`] of the base's weights with [`Adapter`] applied.
pub struct Adapted<'a, S> {
    inner: S,
    adapter: &'a Adapter,
    /// The base's embedding, for a tied head (which must not see the added rows twice).
    base_embedding: Option<Tensor>,
}

impl<'a, S> Adapted<'a, S> {
    pub(super) fn new(inner: S, adapter: &'a Adapter) -> Self {
        Self { inner, adapter, base_embedding: None }
    }
}

fn dense(rows: &Tensor) -> Matrix {
    Matrix::Dense(Linear::new(rows.clone(), None))
}

impl<S: WeightSource> WeightSource for Adapted<'_, S> {
    fn dtype(&self) -> DType {
        self.inner.dtype()
    }

    fn device(&self) -> &Device {
        self.inner.device()
    }

    fn tensor(&mut self, weight: Weight, shape: &[usize]) -> Result<Tensor> {
        let Some(added) = self.adapter.added.as_ref().filter(|_| weight == Weight::Embedding)
        else {
            return self.inner.tensor(weight, shape);
        };
        let base =
            self.inner.tensor(weight, &[self.adapter.base_vocab, added.embeddings.dim(1)?])?;
        self.base_embedding = Some(base.clone());
        Tensor::cat(&[&base, &added.embeddings], 0)
    }

    fn matrix(&mut self, weight: Weight, (rows, inputs): (usize, usize)) -> Result<Matrix> {
        let head_rows = self.adapter.added.as_ref().and_then(|a| a.head.as_ref());
        let base = match head_rows {
            Some(added) if weight == Weight::Head => {
                let base = self.inner.matrix(weight, (self.adapter.base_vocab, inputs))?;
                Matrix::Stacked(vec![base, dense(added)])
            }
            _ => self.inner.matrix(weight, (rows, inputs))?,
        };
        Ok(self.adapter.wrap(weight, base))
    }

    fn tied_head(&mut self, embedding: &Tensor) -> Result<Matrix> {
        let head = match (&self.adapter.added, self.base_embedding.take()) {
            // The base's own head (quantized where the file stores the embedding so) and the
            // added rows after it.
            (Some(added), Some(base)) => {
                Matrix::Stacked(vec![self.inner.tied_head(&base)?, dense(&added.embeddings)])
            }
            _ => self.inner.tied_head(embedding)?,
        };
        Ok(self.adapter.wrap(Weight::Head, head))
    }
}
