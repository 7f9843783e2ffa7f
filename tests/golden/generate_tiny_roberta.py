# Tiny random RoBERTa sentence encoder + golden embeddings (see tests/golden/PROVENANCE.md).
import json, sys, os, torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, processors, decoders
from transformers import RobertaConfig, RobertaModel, PreTrainedTokenizerFast
from sentence_transformers import SentenceTransformer, models as stm
out = sys.argv[1]; corpus = sys.argv[2]
texts = [json.loads(l)["paragraph_text"] if "paragraph_text" in l else l for l in open(corpus)][:400]
tok = Tokenizer(models.BPE(unk_token=None))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tok.train_from_iterator(texts, trainer)
tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                 cls_token="<s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                 model_max_length=34)
torch.manual_seed(0)
cfg = RobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=36, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2, type_vocab_size=1, hidden_act="gelu", layer_norm_eps=1e-5)
model = RobertaModel(cfg, add_pooling_layer=False)
for p in model.parameters():  # larger than the default init, so the layers matter
    torch.nn.init.normal_(p, std=0.2)
model.eval()
tmp = out + "_hf"
model.save_pretrained(tmp, safe_serialization=True)
hf_tok.save_pretrained(tmp)
word = stm.Transformer(tmp, max_seq_length=16)
pool = stm.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
st = SentenceTransformer(modules=[word, pool], device="cpu")
st.save(out)
st = SentenceTransformer(out, device="cpu")
sentences = ["Paris is the capital of France.", "", "A much longer sentence that runs well past the sixteen "
             "token limit of this tiny encoder, so sentence-transformers truncates it.", "résumé naïve café 東京",
             "The quick brown fox jumps over the lazy dog."]
emb = st.encode(sentences, batch_size=2, convert_to_numpy=True)
ids = [st.tokenizer(s, truncation=True, max_length=16)["input_ids"] for s in sentences]
json.dump({"sentences": sentences, "ids": ids, "embeddings": emb.tolist(), "max_seq_length": 16,
           "model_type": "roberta"}, open(out + "/../tiny_roberta_embeddings.json", "w"), indent=1)
print(ids)
