"""The user's data in and out: reading sequences (``sequences``), labels and scaling (``encoding``), and the files
rnnlab writes for the user (``outputs``). The tasks that turn data into batches are in ``rnnlab.tasks``."""
