//! A cache of prompt prefixes' keys and values, so requests that begin alike (the system
//! text and the tools block, the same for every request to one tool set) prefill that
//! beginning once.
//!
//! Prompts are cut into blocks of [`BLOCK`] tokens, and each block is keyed by a hash of
//! its tokens chained to its parent block's key, as vLLM does. A lookup walks a new
//! prompt block by block and stops at the first block not held; a block is stored once
//! whatever the prompts that share it. Chosen over llama.cpp's reuse of the longest common
//! prefix with one slot's last prompt because several beginnings stay useful at once here
//! (one per tool set, per key's allowlist, per system text), and because a lookup costs a
//! hash per block instead of a comparison with every cached prompt. Blocks are evicted
//! least recently used first under a byte budget; a parent is touched whenever its
//! children are, so the leaves go first.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{Result, Tensor};

use crate::model::KvCache;

/// Tokens per block: small enough that a prompt's last partial block (prefilled every
/// time) is cheap, large enough that a 1,000-token tools block is a handful of lookups.
pub const BLOCK: usize = 32;

/// What the cache has done since the engine started, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Prompts that reused at least one cached block.
    pub hits: u64,
    /// Prompts that found nothing to reuse.
    pub misses: u64,
    /// Prompt tokens whose prefill was skipped.
    pub reused_tokens: u64,
    /// Bytes the cached keys and values hold now.
    pub bytes: u64,
}

/// Cached blocks of keys and values, bounded by a byte budget.
#[derive(Debug)]
pub struct PrefixCache {
    budget: u64,
    blocks: Mutex<Blocks>,
    hits: AtomicU64,
    misses: AtomicU64,
    reused: AtomicU64,
}

#[derive(Debug, Default)]
struct Blocks {
    by_key: HashMap<u64, Block>,
    bytes: u64,
    clock: u64,
}

#[derive(Debug)]
struct Block {
    /// The block's own tokens: a lookup compares them, so a hash collision reuses nothing.
    tokens: Vec<u32>,
    /// Keys and values of the block's positions, one pair per layer.
    layers: Vec<(Tensor, Tensor)>,
    bytes: u64,
    used: u64,
}

impl PrefixCache {
    /// A cache holding at most `budget` bytes of keys and values; 0 turns it off.
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            blocks: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }
    }

    /// Fill `cache` (empty) with the longest run of cached blocks that begins `prompt`,
    /// leaving at least one token to prefill (its logits choose the first new token).
    /// Returns how many tokens it restored.
    pub(crate) fn restore(&self, prompt: &[u32], cache: &mut KvCache) -> Result<usize> {
        if self.budget == 0 {
            return Ok(0);
        }
        let usable = prompt.len().saturating_sub(1) / BLOCK;
        let found: Vec<Vec<(Tensor, Tensor)>> = {
            let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
            blocks.clock += 1;
            let now = blocks.clock;
            let mut found = Vec::new();
            for (i, key) in chain(prompt).take(usable).enumerate() {
                let tokens = &prompt[i * BLOCK..(i + 1) * BLOCK];
                match blocks.by_key.get_mut(&key) {
                    Some(block) if block.tokens == tokens => {
                        block.used = now;
                        found.push(block.layers.clone());
                    }
                    _ => break,
                }
            }
            found
        };
        if found.is_empty() {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(0);
        }
        cache.extend(&found)?;
        let restored = found.len() * BLOCK;
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.reused.fetch_add(restored as u64, Ordering::Relaxed);
        Ok(restored)
    }

    /// Keep the whole blocks of `prompt` that `cache` (just prefilled with it) holds and
    /// the cache does not have yet, then evict down to the budget.
    pub(crate) fn store(&self, prompt: &[u32], cache: &KvCache) -> Result<()> {
        if self.budget == 0 {
            return Ok(());
        }
        let whole = prompt.len().min(cache.len()) / BLOCK;
        let keys: Vec<u64> = chain(prompt).take(whole).collect();
        let missing: Vec<usize> = {
            let blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
            (0..whole).filter(|&i| !blocks.by_key.contains_key(&keys[i])).collect()
        };
        // Copied out of the sequence's cache outside the lock: the sequence keeps writing.
        let mut made = Vec::with_capacity(missing.len());
        for i in missing {
            let layers = cache.copy_range(i * BLOCK, BLOCK)?;
            let bytes = layers.iter().map(|(k, v)| tensor_bytes(k) + tensor_bytes(v)).sum();
            made.push((keys[i], prompt[i * BLOCK..(i + 1) * BLOCK].to_vec(), layers, bytes));
        }
        let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        blocks.clock += 1;
        let now = blocks.clock;
        for (key, tokens, layers, bytes) in made {
            if let std::collections::hash_map::Entry::Vacant(slot) = blocks.by_key.entry(key) {
                slot.insert(Block { tokens, layers, bytes, used: now });
                blocks.bytes += bytes;
            }
        }
        while blocks.bytes > self.budget {
            let Some((&oldest, _)) = blocks.by_key.iter().min_by_key(|(_, b)| b.used) else {
                break;
            };
            if let Some(evicted) = blocks.by_key.remove(&oldest) {
                blocks.bytes -= evicted.bytes;
            }
        }
        Ok(())
    }

    /// Forget every block: the prompts they began (a tools block) are not made any more.
    pub fn clear(&self) {
        let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        blocks.by_key.clear();
        blocks.bytes = 0;
    }

    /// Hits, misses, tokens reused and bytes held.
    pub fn stats(&self) -> PrefixStats {
        let bytes = self.blocks.lock().unwrap_or_else(|e| e.into_inner()).bytes;
        PrefixStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            reused_tokens: self.reused.load(Ordering::Relaxed),
            bytes,
        }
    }
}

/// Each whole block's key: a hash of its tokens and of its parent's key.
fn chain(prompt: &[u32]) -> impl Iterator<Item = u64> + '_ {
    prompt.chunks_exact(BLOCK).scan(0u64, |parent, tokens| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        parent.hash(&mut hasher);
        tokens.hash(&mut hasher);
        *parent = hasher.finish();
        Some(*parent)
    })
}

fn tensor_bytes(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_chain_so_a_block_means_its_whole_beginning() {
        let a: Vec<u32> = (0..BLOCK as u32 * 2).collect();
        let mut b = a.clone();
        b[0] = 999;
        let (ka, kb): (Vec<u64>, Vec<u64>) = (chain(&a).collect(), chain(&b).collect());
        assert_eq!(ka.len(), 2);
        // The second blocks hold the same tokens but begin different prompts.
        assert_ne!(ka[1], kb[1]);
        assert_eq!(chain(&a[..BLOCK * 2 - 1]).count(), 1, "a partial block has no key");
    }
}
