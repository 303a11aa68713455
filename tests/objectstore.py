"""Real object-storage servers on 127.0.0.1 for the tests: the GCS JSON API
(``gcp-storage-emulator``) and S3 (``moto`` in server mode).

Each server is a subprocess started by the test session (``gcs_server`` /
``s3_server`` fixtures in ``conftest.py``), on a free port, and pointed at by the
clients' own settings: ``STORAGE_EMULATOR_HOST`` (gcsfs, TensorStore) and
``AWS_ENDPOINT_URL`` with dummy credentials (botocore, s3fs). Buckets are made
per test (``bucket(...)``) so tests do not see each other's objects.

Usage in a test::

    def test_x(object_store):          # parametrized over "gs" and "s3"
      root = object_store.new_bucket()  # "gs://bkt-1a2b3c" or "s3://bkt-1a2b3c"
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
  deadline = time.monotonic() + timeout
  last = None
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
    try:
      urllib.request.urlopen(url, timeout=1.0).read()
      return
    except urllib.error.HTTPError:
      return  # it answers (an error status is still an answer)
    except OSError as e:
      last = e
      time.sleep(0.1)
  raise RuntimeError(f"no answer from {url} within {timeout:g}s: {last}")


@dataclasses.dataclass
class Server:
  """One running emulator and the environment that points clients at it."""
  scheme: str  # "gs" or "s3"
  endpoint: str
  env: dict[str, str]
  proc: subprocess.Popen
  data_dir: str

  def new_bucket(self) -> str:
    """A fresh, empty bucket; returns ``scheme://name``."""
    name = f"bkt-{secrets.token_hex(4)}"
    if self.scheme == "gs":
      import gcsfs  # pylint: disable=import-outside-toplevel
      fs = gcsfs.GCSFileSystem(endpoint_url=self.endpoint, token="anon", project="test")
      fs.mkdir(name)
    else:
      import boto3  # pylint: disable=import-outside-toplevel
      boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                   aws_access_key_id="testing",
                   aws_secret_access_key="testing").create_bucket(Bucket=name)
    return f"{self.scheme}://{name}"

  def stop(self) -> None:
    if self.proc.poll() is None:
      self.proc.terminate()
      try:
        self.proc.wait(10)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
    shutil.rmtree(self.data_dir, ignore_errors=True)


def _which(name: str) -> str:
  found = shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)
  if not os.path.exists(found):
    raise RuntimeError(f"{name} is not installed (pip install -e '.[test]')")
  return found


# gcp-storage-emulator's media downloads lack the x-goog-generation / x-goog-metageneration
# headers that GCS sends; TensorStore (Orbax's writer) reads the generation of an object
# it re-reads from them ("Malformed StorageGeneration" when an OCDBT manifest is read back
# during a checkpoint save). The emulator is started with its download handler adding them.
_GCS_LAUNCHER = """
import sys
from gcp_storage_emulator.handlers import objects
_download = objects.download
def download(request, response, storage, *args, **kwargs):
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj["metageneration"])
  except Exception:
    pass
  return _download(request, response, storage, *args, **kwargs)
objects.download = download
from gcp_storage_emulator.__main__ import main
main(sys.argv[1:])
"""


def start_gcs() -> Server:
  port = free_port()
  data_dir = tempfile.mkdtemp(prefix="proxyjax-gcs-")
  _which("gcp-storage-emulator")  # installed (a clear error if not)
  proc = subprocess.Popen([sys.executable, "-c", _GCS_LAUNCHER, "-d", data_dir, "start",
                           "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
  endpoint = f"http://127.0.0.1:{port}"
  _wait_http(endpoint + "/storage/v1/b", proc)
  env = {"STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_CLOUD_PROJECT": "test",
         # gcsfs's bucket-layout probe (a gRPC control-plane call) has no emulator:
         "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
         # TensorStore (Orbax's array writer) reads the emulator's address here:
         "TENSORSTORE_GCS_HTTP_URL": endpoint, "TENSORSTORE_GCS_REQUEST_CONCURRENCY": "8",
         "GCE_METADATA_HOST": "127.0.0.1:1", "GCE_METADATA_ROOT": "127.0.0.1:1",
         "NO_GCE_CHECK": "True"}
  return Server("gs", endpoint, env, proc, data_dir)


def start_s3() -> Server:
  port = free_port()
  data_dir = tempfile.mkdtemp(prefix="proxyjax-s3-")
  proc = subprocess.Popen([_which("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True, cwd=data_dir)
  endpoint = f"http://127.0.0.1:{port}"
  _wait_http(endpoint + "/", proc)
  env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
         "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
         "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
         # TensorStore's S3 driver:
         "AWS_ENDPOINT_URL_S3": endpoint}
  return Server("s3", endpoint, env, proc, data_dir)
