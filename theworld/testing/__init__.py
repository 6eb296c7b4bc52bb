"""Stand-in bases for tests, the demo and the benchmarks, built offline: tiny random Gemma 3 and Cosmos VAE
repositories (`tiny`), tiny stand-ins for the other built-in world encoders (`tiny_encoders`), a tiny VAE trained on
synthetic scenes (`tiny_vae`), and the pretrained Gemma 3 270M in a Gemma 3 vision-language layout
(`small_real_base`); each is built once into a cache folder (`build_cache`)."""
