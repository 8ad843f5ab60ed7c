//! Property tests of chunk lists (the structure behind aggregates) against a plain model: a
//! `Vec` of byte cells, each naming the buffer and offset it lives at. Select, concat and
//! iteration over random chunk structures must give the same cells, and iteration must merge
//! exactly the contiguous runs.

mod support;

use cosh_core::{BufferId, Chunk, ChunkList};
use proptest::prelude::*;

type Cell = (u64, u64);

const BUFFERS: u64 = 4;
const BUFFER_LEN: u64 = 48;

fn cells_of(list: &ChunkList) -> Vec<Cell> {
    list.chunks()
        .iter()
        .flat_map(|c| (c.offset..c.end()).map(move |o| (c.buffer.0, o)))
        .collect()
}

fn cells_of_pieces(pieces: &[Chunk]) -> Vec<Cell> {
    pieces
        .iter()
        .flat_map(|c| (c.offset..c.end()).map(move |o| (c.buffer.0, o)))
        .collect()
}

/// The number of maximal contiguous runs in a cell sequence.
fn runs(cells: &[Cell]) -> usize {
    if cells.is_empty() {
        return 0;
    }
    1 + cells
        .windows(2)
        .filter(|w| !(w[0].0 == w[1].0 && w[0].1 + 1 == w[1].1))
        .count()
}

fn chunk() -> impl Strategy<Value = Chunk> {
    (0..BUFFERS, 0..BUFFER_LEN)
        .prop_flat_map(|(b, off)| (Just(b), Just(off), 0..=(BUFFER_LEN - off)))
        .prop_map(|(b, offset, len)| Chunk {
            buffer: BufferId(b),
            offset,
            len,
        })
}

/// Chunk lists biased towards neighbours that continue each other, so merging is exercised.
fn chunks() -> impl Strategy<Value = Vec<Chunk>> {
    prop::collection::vec((chunk(), any::<bool>()), 0..24).prop_map(|v| {
        let mut out: Vec<Chunk> = Vec::new();
        for (c, continue_previous) in v {
            match out.last() {
                Some(last) if continue_previous && last.end() < BUFFER_LEN => {
                    let len = c.len.min(BUFFER_LEN - last.end());
                    out.push(Chunk {
                        buffer: last.buffer,
                        offset: last.end(),
                        len,
                    });
                }
                _ => out.push(c),
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(support::cases(512)))]

    #[test]
    fn normal_form_keeps_the_cells_and_merges_exactly_the_runs(raw in chunks()) {
        let list = ChunkList::from_chunks(raw.clone());
        let model: Vec<Cell> = raw
            .iter()
            .flat_map(|c| (c.offset..c.end()).map(move |o| (c.buffer.0, o)))
            .collect();
        prop_assert_eq!(cells_of(&list), model.clone());
        prop_assert_eq!(list.len(), model.len() as u64);
        prop_assert_eq!(list.chunks().len(), runs(&model));
        prop_assert!(list.chunks().iter().all(|c| c.len > 0));
    }

    #[test]
    fn select_matches_slicing(raw in chunks(), offset in 0u64..400, len in 0u64..400) {
        let list = ChunkList::from_chunks(raw);
        let model = cells_of(&list);
        let end = offset + len;
        match list.select(offset, len) {
            Ok(sel) => {
                prop_assert!(end <= model.len() as u64);
                prop_assert_eq!(cells_of(&sel), model[offset as usize..end as usize].to_vec());
                prop_assert_eq!(sel.chunks().len(), runs(&model[offset as usize..end as usize]));
            }
            Err(e) => {
                prop_assert!(end > model.len() as u64);
                prop_assert_eq!(e.available, model.len() as u64);
            }
        }
    }

    #[test]
    fn concat_matches_appending(a in chunks(), b in chunks()) {
        let (la, lb) = (ChunkList::from_chunks(a), ChunkList::from_chunks(b));
        let joined = la.concat(&lb).expect("fits");
        let mut model = cells_of(&la);
        model.extend(cells_of(&lb));
        prop_assert_eq!(cells_of(&joined), model.clone());
        prop_assert_eq!(joined.chunks().len(), runs(&model));
        prop_assert_eq!(joined.len(), la.len() + lb.len());
    }

    #[test]
    fn iteration_yields_exactly_the_maximal_contiguous_pieces(raw in chunks(), offset in 0u64..400) {
        let list = ChunkList::from_chunks(raw);
        let model = cells_of(&list);
        match list.pieces_from(offset) {
            Ok(pieces) => {
                let pieces: Vec<Chunk> = pieces.collect();
                prop_assert!(offset <= model.len() as u64);
                let rest = &model[offset as usize..];
                prop_assert_eq!(cells_of_pieces(&pieces), rest.to_vec());
                prop_assert_eq!(pieces.len(), runs(rest));
                prop_assert!(pieces.iter().all(|p| p.len > 0));
                prop_assert!(pieces.windows(2).all(|w| !w[0].continues_into(&w[1])));
            }
            Err(_) => prop_assert!(offset > model.len() as u64),
        }
    }

    /// Random sequences of select and concat over a growing set of lists stay equal to the
    /// same operations on plain vectors.
    #[test]
    fn select_and_concat_sequences_match_the_vector_model(
        seeds in prop::collection::vec(chunks(), 1..4),
        ops in prop::collection::vec((any::<bool>(), any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0u64..200, 0u64..200), 1..40),
    ) {
        let mut lists: Vec<ChunkList> = seeds.into_iter().map(ChunkList::from_chunks).collect();
        let mut models: Vec<Vec<Cell>> = lists.iter().map(cells_of).collect();
        for (is_concat, i, j, x, y) in ops {
            let (i, j) = (i.index(lists.len()), j.index(lists.len()));
            if is_concat {
                let joined = lists[i].concat(&lists[j]).expect("fits");
                let mut m = models[i].clone();
                m.extend(models[j].iter().copied());
                lists.push(joined);
                models.push(m);
            } else {
                let n = models[i].len() as u64;
                let (offset, len) = if n == 0 { (0, 0) } else { (x % (n + 1), y % (n + 1 - x % (n + 1))) };
                let sel = lists[i].select(offset, len).expect("in range by construction");
                models.push(models[i][offset as usize..(offset + len) as usize].to_vec());
                lists.push(sel);
            }
            let (last, model) = (lists.last().expect("pushed"), models.last().expect("pushed"));
            prop_assert_eq!(&cells_of(last), model);
            prop_assert_eq!(last.chunks().len(), runs(model));
        }
    }
}
