from transformers import AutoModelForCausalLM, AutoTokenizer

from kdroute.tinymodels import count_parameters, format_prompt, format_response, save_tiny_model


def test_saved_tiny_model_round_trips_text_and_chat_format(tmp_path):
    path = save_tiny_model(tmp_path / "m", n_layer=1, n_embd=32, n_head=2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    text = format_prompt("What is 347 + 85?") + format_response("432")
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == len(text)  # one token per character, no special tokens added
    assert tokenizer.decode(ids) == text
    chat = [{"role": "user", "content": "What is 347 + 85?"}, {"role": "assistant", "content": "432"},
            {"role": "user", "content": "And 1 + 1?"}]
    rendered = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered == text + format_prompt("And 1 + 1?")
    assert model.config.vocab_size == len(tokenizer) and count_parameters(model) > 0
