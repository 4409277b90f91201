"""An app serving the directory named by AIOSERVE_TEST_FILES at /f (for subprocess tests)."""
import os

from aioserve import App

app = App()
app.static("/f", os.environ["AIOSERVE_TEST_FILES"])
