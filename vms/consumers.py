from channels.generic.websocket import AsyncJsonWebsocketConsumer


class UpdatesConsumer(AsyncJsonWebsocketConsumer):
    pass
