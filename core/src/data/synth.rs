//! Long-context question synthesis (SEALONG `process_data.py::create_dataset_musique`, with a
//! seeded RNG): per question a random target of K x 1024 tokens; the supporting documents always
//! kept; distractors added first-fit in random order, first from the question's own
//! non-supporting paragraphs, then from a shared paragraph pool when more are needed; documents
//! shuffled and laid out as `Passage i:`. The same builder makes LongBench-style evaluation files
//! from HotpotQA / 2Wiki / MuSiQue dev records (titles shown): with their own paragraphs only, or
//! long ones ([`Target::Tokens`]) where every own paragraph is kept and pool passages pad the
//! context to a fixed length, at seeded positions.
//!
//! Differences from the official code, each deliberate: documents are the datasets' paragraphs
//! (full Wikipedia articles are not shipped), randomness is seeded per question, and the final
//! context's token count is checked against the target (a passage header can add a few tokens;
//! the last distractor is dropped until it fits).

use std::collections::{HashMap, HashSet};

use rand::RngExt;
use rand::seq::SliceRandom;

use crate::data::records::{LongBenchRecord, MultiHopRecord, MusiqueRecord, Paragraph, join_sentences};
use crate::error::{Error, Result};
use crate::rng;
use crate::text::{Tokenizer, prompts, pystr};

/// How each passage is written after its `Passage i:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassageFormat {
    /// The text only, as SEALONG's training contexts (`Passage i:\n<text>`).
    #[default]
    Sealong,
    /// Title line, then text, as LongBench's multi-document QA (`Passage i:\n<title>\n<text>`).
    LongBench,
}

/// The per-question context length target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The question's own paragraphs only, no length target (LongBench-style eval files).
    Own,
    /// K x 1024 tokens with K uniform in `[min_k, max_k]` (SEALONG: 4..=31).
    Range { min_k: u32, max_k: u32 },
    /// Long evaluation files: every own paragraph of the question (its supporting ones and its
    /// own distractors, as the dataset gave them), padded with pool passages up to this many
    /// tokens. Own paragraphs are never dropped, so a question whose own context is already
    /// longer keeps it whole.
    Tokens(usize),
}

#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub target: Target,
    pub seed: u64,
    pub format: PassageFormat,
    /// The `dataset` field written on every record.
    pub dataset: String,
    /// Accept contexts below the target when all documents are used up (otherwise an error).
    pub allow_short: bool,
}

/// A question before its context is built.
#[derive(Debug, Clone)]
pub struct SourceQuestion {
    pub id: String,
    pub question: String,
    pub answer: String,
    pub aliases: Vec<String>,
    pub supporting: Vec<Paragraph>,
    pub distractors: Vec<Paragraph>,
}

impl SourceQuestion {
    /// From MuSiQue (answerable records only; callers filter with [`MusiqueRecord::answerable`]).
    pub fn from_musique(r: &MusiqueRecord) -> Self {
        let mut supporting = Vec::new();
        let mut distractors = Vec::new();
        let mut seen = HashSet::new();
        for p in &r.paragraphs {
            let doc = Paragraph {
                title: p.title.clone(),
                text: p.paragraph_text.clone(),
            };
            if !seen.insert(doc.clone()) {
                continue;
            }
            if p.is_supporting {
                supporting.push(doc);
            } else {
                distractors.push(doc);
            }
        }
        SourceQuestion {
            id: r.id.clone(),
            question: r.question.clone(),
            answer: r.answer.clone(),
            aliases: r.answer_aliases.clone(),
            supporting,
            distractors,
        }
    }

    /// From HotpotQA / 2Wiki: paragraphs named in `supporting_facts` support the answer.
    pub fn from_multihop(r: &MultiHopRecord) -> Self {
        let support_titles: HashSet<&str> = r.supporting_facts.iter().map(|(t, _)| t.as_str()).collect();
        let mut supporting = Vec::new();
        let mut distractors = Vec::new();
        let mut seen = HashSet::new();
        for (title, sentences) in &r.context {
            let doc = Paragraph {
                title: title.clone(),
                text: join_sentences(sentences),
            };
            if !seen.insert(doc.clone()) {
                continue;
            }
            if support_titles.contains(title.as_str()) {
                supporting.push(doc);
            } else {
                distractors.push(doc);
            }
        }
        SourceQuestion {
            id: r.id.clone(),
            question: r.question.clone(),
            answer: r.answer.clone(),
            aliases: Vec::new(),
            supporting,
            distractors,
        }
    }
}

/// A document placed in a context: (document, supporting, tokens, kept whatever the length).
type Chosen = (Paragraph, bool, usize, bool);

/// Builds contexts for questions; caches token counts of pool documents across questions.
pub struct Synthesizer<'a> {
    tokenizer: &'a Tokenizer,
    pool: Vec<Paragraph>,
    pool_tokens: Vec<Option<usize>>,
    config: SynthConfig,
    /// Tokens of a passage header (`Passage NN:\n`), charged per document.
    header_tokens: usize,
}

impl<'a> Synthesizer<'a> {
    pub fn new(tokenizer: &'a Tokenizer, pool: Vec<Paragraph>, config: SynthConfig) -> Result<Self> {
        if let Target::Range { min_k, max_k } = config.target
            && (min_k == 0 || min_k > max_k)
        {
            return Err(Error::Invalid(format!(
                "target range {min_k}..={max_k} (x1024 tokens) is empty or starts at 0"
            )));
        }
        // Two-digit numbers cost the most header tokens of the counts we see in practice.
        let header_tokens = tokenizer.count("Passage 10:\n")?;
        let pool_tokens = vec![None; pool.len()];
        Ok(Synthesizer {
            tokenizer,
            pool,
            pool_tokens,
            config,
            header_tokens,
        })
    }

    fn body(&self, doc: &Paragraph) -> String {
        match self.config.format {
            PassageFormat::Sealong => doc.text.clone(),
            PassageFormat::LongBench => format!("{}\n{}", doc.title, doc.text),
        }
    }

    fn doc_tokens(&self, doc: &Paragraph) -> Result<usize> {
        Ok(self.tokenizer.count(&self.body(doc))? + self.header_tokens)
    }

    fn pool_doc_tokens(&mut self, i: usize) -> Result<usize> {
        if let Some(n) = self.pool_tokens[i] {
            return Ok(n);
        }
        let n = self.doc_tokens(&self.pool[i])?;
        self.pool_tokens[i] = Some(n);
        Ok(n)
    }

    /// Builds the LongBench-schema record of one question.
    pub fn build(&mut self, q: &SourceQuestion) -> Result<LongBenchRecord> {
        // Eval files keep a record whose supporting paragraphs are missing from its context (a
        // few real HotpotQA records are like that); a training context must contain them.
        if q.supporting.is_empty() && matches!(self.config.target, Target::Range { .. }) {
            return Err(Error::Invalid(format!(
                "question {}: no supporting paragraph among its paragraphs",
                q.id
            )));
        }
        let mut rng = rng::for_item(self.config.seed, &q.id);
        // (document, supporting, tokens, kept): supporting documents first, always kept; with a
        // fixed token target the question's own distractors are kept too. Only documents not
        // kept may be dropped when the laid-out context runs over the target.
        let mut chosen: Vec<Chosen> = Vec::new();
        let mut total = 0;
        for d in &q.supporting {
            let n = self.doc_tokens(d)?;
            total += n;
            chosen.push((d.clone(), true, n, true));
        }
        let target = match self.config.target {
            Target::Own => None,
            Target::Range { min_k, max_k } => Some(rng.random_range(min_k..=max_k) as usize * 1024),
            Target::Tokens(t) => Some(t),
        };
        let mut own: Vec<&Paragraph> = q.distractors.iter().collect();
        match (target, self.config.target) {
            (None, _) => {
                for d in own {
                    let n = self.doc_tokens(d)?;
                    chosen.push((d.clone(), false, n, false));
                }
            }
            (Some(target), Target::Tokens(_)) => {
                for d in own {
                    let n = self.doc_tokens(d)?;
                    total += n;
                    chosen.push((d.clone(), false, n, true));
                }
                if total < target {
                    self.fill_from_pool(q, &mut chosen, total, target, &mut rng)?;
                }
            }
            (Some(target), _) => {
                own.shuffle(&mut rng);
                for d in own {
                    let n = self.doc_tokens(d)?;
                    if total + n <= target {
                        total += n;
                        chosen.push((d.clone(), false, n, false));
                    }
                }
                if total < target {
                    self.fill_from_pool(q, &mut chosen, total, target, &mut rng)?;
                }
            }
        }
        chosen.shuffle(&mut rng);
        loop {
            let record = self.record(q, &chosen, target)?;
            let n = record.num_tokens.unwrap_or(0);
            match target {
                Some(t) if n > t => {
                    // Passage headers or token merges across passage boundaries went over the
                    // target: drop the last distractor in passage order and rebuild.
                    match chosen.iter().rposition(|(_, _, _, kept)| !kept) {
                        Some(i) => {
                            chosen.remove(i);
                        }
                        None => return Ok(record),
                    }
                }
                _ => return Ok(record),
            }
        }
    }

    fn fill_from_pool(
        &mut self,
        q: &SourceQuestion,
        chosen: &mut Vec<Chosen>,
        mut total: usize,
        target: usize,
        rng: &mut rng::Rng,
    ) -> Result<()> {
        // Pool documents about the question's own articles could contradict or duplicate its
        // supporting facts: leave out every pool document whose title or text the question
        // already has (a pool can hold another copy of a paragraph under another title).
        let own_titles: HashSet<&str> = q
            .supporting
            .iter()
            .chain(&q.distractors)
            .map(|d| d.title.as_str())
            .collect();
        let own_texts: HashSet<&str> = q
            .supporting
            .iter()
            .chain(&q.distractors)
            .map(|d| d.text.trim())
            .collect();
        let mut order: Vec<usize> = (0..self.pool.len())
            .filter(|&i| {
                !own_titles.contains(self.pool[i].title.as_str()) && !own_texts.contains(self.pool[i].text.trim())
            })
            .collect();
        order.shuffle(rng);
        let mut available = total;
        for i in order {
            let n = self.pool_doc_tokens(i)?;
            available += n;
            if total + n <= target {
                total += n;
                chosen.push((self.pool[i].clone(), false, n, false));
            }
        }
        if available < target && !self.config.allow_short {
            return Err(Error::Invalid(format!(
                "question {}: the paragraph pool is too small for a {target}-token context \
                 ({available} tokens available in all); add a larger --pool, a lower target (--max-k, --target-tokens), or pass --allow-short",
                q.id
            )));
        }
        Ok(())
    }

    fn record(&self, q: &SourceQuestion, chosen: &[Chosen], target: Option<usize>) -> Result<LongBenchRecord> {
        let bodies: Vec<String> = chosen.iter().map(|(d, _, _, _)| self.body(d)).collect();
        let context = prompts::passages_context(&bodies);
        let num_tokens = self.tokenizer.count(&context)?;
        let supporting_passages = chosen
            .iter()
            .enumerate()
            .filter(|(_, (_, sup, _, _))| *sup)
            .map(|(i, _)| i + 1)
            .collect();
        Ok(LongBenchRecord {
            id: q.id.clone(),
            input: q.question.clone(),
            length: pystr::split_whitespace(&context).count(),
            context,
            answers: vec![q.answer.clone()],
            dataset: self.config.dataset.clone(),
            language: Some("en".into()),
            all_classes: None,
            num_tokens: Some(num_tokens),
            target_tokens: target,
            supporting_passages,
            answer_aliases: q.aliases.clone(),
        })
    }
}

/// Questions in the order they are synthesized: the input order shuffled with `seed` (as the
/// official code shuffles with seed 42 before taking the first 2,048), then the first `n`.
pub fn select_questions(mut questions: Vec<SourceQuestion>, seed: u64, n: Option<usize>) -> Vec<SourceQuestion> {
    let mut r = rng::for_item(seed, "question-order");
    questions.shuffle(&mut r);
    if let Some(n) = n {
        questions.truncate(n);
    }
    questions
}

/// Checks that question ids are unique (output files are keyed by id for resuming).
pub fn check_unique_ids(questions: &[SourceQuestion]) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, q) in questions.iter().enumerate() {
        if let Some(j) = seen.insert(q.id.as_str(), i) {
            return Err(Error::Invalid(format!(
                "question id {:?} appears twice (records {} and {})",
                q.id,
                j + 1,
                i + 1
            )));
        }
    }
    Ok(())
}
