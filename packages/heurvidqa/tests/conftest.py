import pytest

pytest.importorskip("av")


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """A tiny MovingShapes-QA written to disk (30 caption clips, 25/10/10 questions, avi val)."""
    from heurvidqa import synthetic as syn

    root = tmp_path_factory.mktemp("movingshapes")
    return syn.generate(root, syn.SyntheticSizes(30, 25, 10, 10), seed=0, write_avi=True,
                        show_progress=False)  # fmt: skip


@pytest.fixture(scope="session")
def tokenizer():
    from heurvidqa.model import load_tokenizer

    return load_tokenizer()


@pytest.fixture
def tiny_cfg():
    from heurvidqa.config import model_config

    return model_config("cpu", text_model="tiny", video_hidden=32, video_layers=2, video_heads=2,
                        video_mlp=64, num_frames=4)  # fmt: skip
