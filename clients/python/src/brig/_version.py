# The SDK's version follows the API's (the OpenAPI document's info.version).
__version__ = "0.1.0"
