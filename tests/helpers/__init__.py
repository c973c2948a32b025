"""What several test modules share (the fixtures are in tests/conftest.py):

- `cli`: the `turn` command in a subprocess (`turn(...)`), and tiny image folders to run it on;
- `waiting`: `wait_for`, polling a condition;
- `server`: a real `streamlit run app/main.py` (`AppServer`), Chromium's settings, `wait_idle`;
- `apptest`: reading Streamlit `AppTest` results (`texts`, `metric`);
- `browser`: Playwright page helpers of the browser tests.

Test modules import them as `from helpers.cli import turn`: pytest puts tests/ on sys.path.
"""
